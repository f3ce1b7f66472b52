"""The Unsloth training backend (CUDA only): the same interface (``backend.TrainingBackend``) and training loop
as ``PeftBackend``, with Unsloth's fused LoRA, RMSNorm and RoPE kernels and its offloaded gradient checkpointing
underneath.

Unsloth patches a model while loading it, so ``attach`` loads a second copy of the base model from its folder
with ``FastLanguageModel.from_pretrained`` (16-bit, never 4-bit: the adapter must fit the plain base model it
will be used with) and ``detach`` frees that copy again. The resident model in ``LoadedModel`` is never touched:
it keeps answering questions, and the adapter is loaded onto it afterwards like any other.

What the training loop relies on, checked against unsloth 2026.10.9 (``unsloth/models/llama.py``):
- ``model.get_base_model().base_model(input_ids=..., attention_mask=...)`` runs Unsloth's
  ``LlamaModel_fast_forward`` and returns ``last_hidden_state``. In training mode it drops the attention mask,
  which is right for the loop's right-padded batches (causal attention never looks at the padding after a
  row's last token). It truncates inputs longer than ``max_seq_length``, so that is the model's whole window.
- LoRA weights are float32 (Unsloth's "float32 mixed precision"); the fused kernels cast them to the bf16
  activations, so no autocast is needed (``training_precision`` says ``native`` on CUDA).
- ``save_pretrained`` on the PEFT model is PEFT's own (Unsloth's wrapper only normalises
  ``safe_serialization=None``): ``adapter_config.json`` + ``adapter_model.safetensors`` with the same module
  names as plain PEFT, and no embedding weights unless embeddings are trained, which ``attach`` refuses.

Import order: Unsloth asks to be imported before transformers and peft, which lift-tool has always imported by
the time it trains. Its class patches are applied when ``from_pretrained`` runs (and since 2026 only take
effect on models Unsloth loaded itself), so importing it late costs nothing here; the warning it prints about
the order is silenced. Importing it does change some process-wide state (environment variables, a patched
``PeftModelForCausalLM.forward``, Unsloth's rotary-embedding class for Llama models built afterwards), so it
is imported only on a CUDA machine, only when this backend is used.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

from lift_tool.errors import ConfigError
from lift_tool.training.backend import UNSLOTH_INSTALL_HINT, cuda_available

if TYPE_CHECKING:
    from lift_tool.config import Settings
    from lift_tool.models import LoadedModel


class UnslothBackend:
    """LoRA training through Unsloth on a private copy of the base model."""

    name = "unsloth"

    def attach(self, loaded: "LoadedModel", settings: "Settings"):
        if loaded.path is None:
            raise ConfigError(
                f"the unsloth backend reloads the base model from its folder, but {loaded.name} was built in "
                "memory and has none; use --backend peft"
            )
        device = str(loaded.device)
        if not device.startswith("cuda") or not cuda_available():
            raise ConfigError(f"the unsloth backend needs a CUDA GPU, and the model is on {device}; use --backend peft")
        FastLanguageModel = _import_unsloth()

        import torch

        lora = settings.lora
        seed = settings.training.seed
        dtype = loaded.model.dtype if loaded.model.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        model, _tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(loaded.path),
            max_seq_length=loaded.context_window,  # Unsloth cuts inputs longer than this
            dtype=dtype,
            load_in_4bit=False,
            load_in_8bit=False,
            full_finetuning=False,
            device_map=device,
            fix_tokenizer=False,  # lift-tool's tokenizer is the one the adapter is used with; keep vocab as is
            offload_embedding=False,  # keep every weight on the GPU, where the loop sends its inputs
            local_files_only=True,
            trust_remote_code=False,
            use_gradient_checkpointing="unsloth",
            random_state=seed,
        )
        try:
            model = FastLanguageModel.get_peft_model(
                model,
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,  # 0 (the default) keeps Unsloth's fused LoRA kernels
                target_modules=list(lora.target_modules),
                layers_to_transform=lora.adapted_layers(model.config.num_hidden_layers),
                bias="none",
                modules_to_save=None,
                use_rslora=False,
                use_gradient_checkpointing="unsloth",  # Unsloth's recommendation: activations offloaded to CPU
                random_state=seed,
            )
            extra = model.peft_config["default"].modules_to_save
            if extra:  # full embedding copies would make the adapter neither small nor plain LoRA
                raise ConfigError(f"unsloth wants to train {sorted(extra)} as full weights; use --backend peft")
            FastLanguageModel.for_training(model)
        except BaseException:
            _free(model)  # absorb() only detaches what attach() returned
            raise
        return model

    def detach(self, peft_model, loaded: "LoadedModel") -> None:
        """Free Unsloth's copy of the model; ``loaded`` is left exactly as it was."""
        _free(peft_model)


def _free(model) -> None:
    import gc

    import torch

    # absorb() still holds a reference to the model until it returns, so empty the tensors now rather than
    # wait for the last reference to go: the answering model needs that GPU memory next.
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.grad = None
            tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
    del model
    gc.collect()
    torch.cuda.empty_cache()


def _import_unsloth():
    """Import Unsloth (CUDA machines only) and return ``FastLanguageModel``; a missing or broken install is a
    ConfigError that says what to do."""
    # Unsloth reports usage statistics to the Hugging Face hub on load unless told not to.
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Unsloth should be imported before.*")
            from unsloth import FastLanguageModel
    except ImportError as err:
        if getattr(err, "name", None) in ("unsloth", "unsloth_zoo"):
            raise ConfigError(f"the unsloth backend is not installed: {UNSLOTH_INSTALL_HINT}") from None
        raise ConfigError(f"unsloth could not be imported ({err}); reinstall it ({UNSLOTH_INSTALL_HINT}) or use --backend peft") from err
    except Exception as err:  # Unsloth checks torch, CUDA and transformers versions on import and raises many types
        raise ConfigError(f"unsloth does not work on this machine ({type(err).__name__}: {err}); use --backend peft") from err
    return FastLanguageModel
