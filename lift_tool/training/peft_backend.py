"""The PEFT training backend, used everywhere: LoRA layers injected into the live model, removed after training."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lift_tool.config import Settings
    from lift_tool.models import LoadedModel


class PeftBackend:
    """Plain PEFT: LoRA layers injected into the live model, removed again after training."""

    name = "peft"

    def attach(self, loaded: "LoadedModel", settings: "Settings"):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=settings.lora.rank,
            lora_alpha=settings.lora.alpha,
            lora_dropout=settings.lora.dropout,
            target_modules=settings.lora.target_modules,
            layers_to_transform=settings.lora.adapted_layers(loaded.model.config.num_hidden_layers),
            task_type="CAUSAL_LM",
        )
        return get_peft_model(loaded.model, config)

    def detach(self, peft_model, loaded: "LoadedModel") -> None:
        # unload() removes the LoRA layers without merging them, leaving the base model as it was.
        loaded.model = peft_model.unload()
        loaded.model.eval()
