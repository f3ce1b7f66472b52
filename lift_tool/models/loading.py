"""Resolve a model spec to a local folder (or hub id) and load it as a :class:`LoadedModel`.

A spec is one of:
- a short name of a bundled model (``smollm2-135m``, the default; ``default`` is an alias);
- a local folder in Hugging Face format (``config.json`` + weights);
- a local ``.gguf`` file (converted once into the cache);
- a Hugging Face hub id, where a hub is reachable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lift_tool.config import Settings
from lift_tool.errors import ModelError
from lift_tool.models.cpu_decoding import speed_up_cpu_decoding
from lift_tool.models.delivery import ALIASES, BUNDLED, known_names
from lift_tool.models.device import pick_device, pick_dtype
from lift_tool.models.fingerprint import FINGERPRINT_FILE, fingerprint_folder, fingerprint_model
from lift_tool.models.gguf import convert_gguf

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LoadedModel:
    """A base model ready for training or generation, with what adapters need to record about it."""

    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    name: str  # human-readable, e.g. SmolLM2-135M-Instruct
    fingerprint: str  # architecture + config + weights; adapters record it
    path: Path | None  # the folder it was loaded from (None for a model built in memory)
    context_window: int  # tokens the model attends to at once

    @property
    def device(self) -> "torch.device":
        return self.model.device


def resolve_spec(spec: str, settings: Settings) -> tuple[str, Path | str]:
    """Turn a spec into (base model name, local folder or hub id). Converts GGUF files into the cache."""
    key = ALIASES.get(spec.lower(), spec.lower())
    if key in BUNDLED:
        bundled = BUNDLED[key]
        folder = settings.cache_dir / "models" / key
        if (folder / FINGERPRINT_FILE).is_file():  # converted before: the GGUF file is not needed (nor re-hashed)
            return bundled.name, folder
        return bundled.name, convert_gguf(bundled.locate_gguf(settings), folder)

    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        stat = path.stat()
        tag = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return path.stem, convert_gguf(path, settings.cache_dir / "models" / f"{path.stem}-{tag}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a folder but has no config.json: point at a Hugging Face model folder")
        return path.resolve().name, path.resolve()
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ModelError(f"model not found: {spec} (expected a model folder, a .gguf file, or one of {known_names()})")
    if "/" not in spec:
        raise ModelError(f"unknown model {spec!r}: use one of {known_names()}, a local folder, or a .gguf file")
    return spec, spec  # a hub id


_FINGERPRINT_CACHE: dict[tuple[str, int], str] = {}


def load_model(spec: str | None = None, settings: Settings | None = None) -> LoadedModel:
    """Load a base model and its tokenizer on the chosen device and dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings or Settings()
    spec = spec or settings.model
    name, source = resolve_spec(spec, settings)
    device = pick_device(settings.device)
    dtype = pick_dtype(device, settings.dtype)

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as err:
        if isinstance(source, Path):
            raise ModelError(f"could not load the model in {source}: {err}") from err
        raise ModelError(
            f"could not load {spec!r} from the Hugging Face hub ({type(err).__name__}). "
            "If this machine has no access to the hub, download the model elsewhere and pass its local "
            "folder instead: --model /path/to/model-folder (or set LIFT_MODEL)."
        ) from None
    model.to(device)
    model.eval()
    if device == "cpu":
        speed_up_cpu_decoding(model, dtype)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    if isinstance(source, Path):
        stat = (source / "config.json").stat()
        key = (str(source), stat.st_mtime_ns)
        if key not in _FINGERPRINT_CACHE:
            _FINGERPRINT_CACHE[key] = fingerprint_folder(source)
        fingerprint = _FINGERPRINT_CACHE[key]
    else:
        fingerprint = fingerprint_model(model)
    return wrap_model(model, tokenizer, name=name, fingerprint=fingerprint, path=source if isinstance(source, Path) else None)


def wrap_model(model, tokenizer, name: str, fingerprint: str | None = None, path: Path | None = None) -> LoadedModel:
    """Wrap a model already in memory (for example one built by a test) as a :class:`LoadedModel`."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    window = getattr(model.config, "max_position_embeddings", None) or 2048
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        fingerprint=fingerprint or fingerprint_model(model),
        path=path,
        context_window=int(window),
    )
