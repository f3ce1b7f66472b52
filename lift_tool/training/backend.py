"""What a training backend is, and which one absorption uses.

A backend puts LoRA layers on a model for training and takes them off again; the training loop and the save
step never ask which backend they have. Two exist: ``peft`` everywhere (``peft_backend``), ``unsloth`` on CUDA
when installed (``unsloth_backend``). Unsloth is imported only when that backend attaches, on a CUDA machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Protocol

from lift_tool.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from lift_tool.config import Settings
    from lift_tool.models import LoadedModel

UNSLOTH_INSTALL_HINT = "pip install 'lift-tool[gpu]'"


class AdaptedModel(Protocol):
    """What ``attach`` returns: a PEFT model (``peft.PeftModel``) whose LoRA weights are the only trainable ones.

    The loop relies on ``get_base_model()`` returning the causal LM, whose ``base_model`` is the transformer body
    (called with ``input_ids`` and ``attention_mask``, returning ``last_hidden_state``) and whose
    ``get_output_embeddings()`` is the output layer. ``save_pretrained`` writes a plain PEFT folder
    (``adapter_config.json`` + ``adapter_model.safetensors``) that loads onto the plain base model.
    """

    device: Any

    def parameters(self) -> Iterator[Any]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def get_base_model(self) -> Any: ...

    def save_pretrained(self, save_directory: "str | Path", **kwargs: Any) -> None: ...


class TrainingBackend(Protocol):
    """Attaches LoRA layers for training and detaches them again, leaving the base model as it was."""

    name: str

    def attach(self, loaded: "LoadedModel", settings: "Settings") -> AdaptedModel:
        """LoRA layers as ``settings.lora`` asks, on ``loaded``'s model or on a private copy of it."""
        ...

    def detach(self, peft_model: AdaptedModel, loaded: "LoadedModel") -> None:
        """Undo ``attach``; called whatever happened in between. ``loaded`` answers as before afterwards."""
        ...


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def unsloth_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("unsloth") is not None


def choose_backend(requested: str, device: str, reloadable: bool = True) -> str:
    """``auto`` picks Unsloth on a CUDA device when it is installed and the model has a folder to reload from
    (Unsloth loads its own copy), PEFT otherwise."""
    on_cuda = device.startswith("cuda")
    if requested == "peft":
        return "peft"
    if requested == "unsloth":
        if not on_cuda:
            raise ConfigError("the unsloth backend needs a CUDA GPU; use --backend peft (or auto) on this machine")
        if not unsloth_installed():
            raise ConfigError(f"the unsloth backend is not installed: {UNSLOTH_INSTALL_HINT}")
        return "unsloth"
    return "unsloth" if on_cuda and reloadable and unsloth_installed() else "peft"


def make_backend(name: str) -> TrainingBackend:
    """The backend called ``name`` (as ``choose_backend`` returns it); importing it imports nothing heavy."""
    if name == "unsloth":
        from lift_tool.training.unsloth_backend import UnslothBackend

        return UnslothBackend()
    from lift_tool.training.peft_backend import PeftBackend

    return PeftBackend()
