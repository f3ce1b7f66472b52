"""Adapters that travel: the base model named as a user elsewhere loads it, a model card that says what the
adapter is and how to load it, and a plain PEFT folder to hand to someone without lift-tool.

PEFT writes ``base_model_name_or_path`` as the path it loaded the model from (a folder in this machine's cache)
and an empty model-card template. :func:`make_portable` replaces both in a freshly trained adapter folder,
before the registry records its checksums; the exact base model stays recorded in ``lift_manifest.json`` (its
name and fingerprint), which is what lift-tool itself checks. :func:`export_peft` writes a copy that needs
nothing but transformers and PEFT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from lift_tool.errors import InputError
from lift_tool.files import write_atomic

if TYPE_CHECKING:
    from lift_tool.memory.manifest import Manifest
    from lift_tool.memory.registry import AdapterEntry

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"


def hub_name(spec: str, folder: Path | None = None) -> str:
    """The base model as a user would load it: the hub id of a bundled model, a hub id given as the spec, the
    hub id a local folder's ``config.json`` names (``_name_or_path``), else the folder's or file's name."""
    from lift_tool.models.delivery import bundled, display_name

    known = bundled(spec)
    if known is not None and known.hub_id:
        return known.hub_id
    if folder is not None:
        try:
            named = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("_name_or_path", "")
        except (OSError, ValueError, AttributeError):
            named = ""
        if isinstance(named, str) and named.count("/") == 1 and not named.startswith((".", "/", "~")):
            return named
    return display_name(spec)


def make_portable(folder: Path, manifest: "Manifest", base_name: str) -> None:
    """In an adapter folder: ``base_model_name_or_path`` set to ``base_name``, and a filled model card."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name
    write_atomic(folder / CONFIG_FILE, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    write_atomic(folder / CARD_FILE, model_card(manifest, config, base_name).encode("utf-8"))


def model_card(manifest: "Manifest", config: dict, base_name: str, folder_name: str = "path/to/this-folder") -> str:
    """The README.md of an adapter folder: what it holds, how it was trained, how to load it."""
    from lift_tool.models.delivery import bundled
    from lift_tool.prompts import system_prompt

    known = bundled(manifest.base_model) or bundled(base_name)
    trained_on = f"`{manifest.base_model}`, fingerprint `{manifest.base_fingerprint}`"
    if known is not None and known.gguf_note:
        trained_on += f" ({known.gguf_note}; the hub's full-precision weights answer much the same)"
    training = manifest.settings.get("training", {}) if isinstance(manifest.settings, dict) else {}
    settings = [
        f"- LoRA rank {config.get('r')}, alpha {config.get('lora_alpha')}, on "
        f"{', '.join(sorted(config.get('target_modules') or [])) or 'the projections'}"
        + (f", layers {min(config['layers_to_transform'])}-{max(config['layers_to_transform'])}"
           if config.get("layers_to_transform") else ""),
        f"- {manifest.steps} steps of {manifest.planned_steps} planned"
        + (" (stopped at the time budget)" if manifest.stopped_by_budget else "")
        + f", {manifest.train_seconds:.0f} s on {manifest.device or 'unknown device'} ({manifest.precision or 'default precision'}), "
          f"backend {manifest.backend or 'peft'}",
        f"- learning rate {training.get('learning_rate')}, {training.get('epochs')} epoch(s), seed {training.get('seed')}",
        f"- {manifest.qa_pairs} synthetic questions, {manifest.unanswerable_pairs} unanswerable ones; final loss "
        f"{manifest.losses.get('final') if isinstance(manifest.losses, dict) else None}",
    ]
    coverage = getattr(manifest, "coverage", None)  # recorded by newer versions
    if isinstance(coverage, (int, float)) and not isinstance(coverage, bool):
        settings.append(f"- covers {coverage:.0%} of the document"
                        + (" (training was cut at its time budget)" if coverage < 1 else ""))
    rank = config.get("r") or 16
    return f"""---
base_model: {base_name}
library_name: peft
tags:
- lora
- lift
- lift-tool
---

# LIFT adapter: {manifest.title}

A LoRA adapter that holds one document in its weights (LIFT, Long Input Fine-Tuning, arXiv 2502.14644), made by
lift-tool {manifest.lift_tool_version or ''}. With it, `{base_name}` answers questions about the document without
the document in its prompt.

- Document: **{manifest.title}**, {manifest.tokens:,} tokens ({manifest.chars:,} characters), id `{manifest.doc_id}`
- Base model: `{base_name}`; trained on {trained_on}
- Created: {manifest.created}

## Training

{chr(10).join(settings)}

Every setting is in `lift_manifest.json` where lift-tool keeps the adapter.

## Load it with PEFT

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base_name}")
tokenizer = AutoTokenizer.from_pretrained("{base_name}")
model = PeftModel.from_pretrained(base, "{folder_name}")
```

Ask through the base model's chat template, with the system message it was trained with:
`{system_prompt([manifest.title])}`

## Serve it with vLLM

```bash
vllm serve {base_name} --enable-lora --max-lora-rank {rank} --lora-modules doc={folder_name}
```

and ask for the model `doc` through the OpenAI-compatible API.
"""


def export_peft(entry: "AdapterEntry", weights: bytes, target: Path, force: bool = False) -> Path:
    """Write ``entry``'s adapter (``weights``: its checked safetensors bytes) as a plain PEFT folder (config,
    weights, model card) at ``target``.

    The folder loads with ``PeftModel.from_pretrained`` on a machine without lift-tool. An existing ``target``
    is refused unless ``force`` (then its PEFT files are replaced).
    """
    from lift_tool.memory.manifest import Manifest

    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a folder: give a new folder's name")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise InputError(f"{target} exists and is not empty: give a new folder, or --force to overwrite it")
    manifest = Manifest.read(entry.path)
    config = json.loads((entry.path / CONFIG_FILE).read_text(encoding="utf-8"))
    base_name = config.get("base_model_name_or_path") or manifest.base_model
    if Path(str(base_name)).is_absolute():  # an adapter from before portable names
        base_name = hub_name(manifest.base_model)
    config["base_model_name_or_path"] = base_name
    target.mkdir(parents=True, exist_ok=True)
    write_atomic(target / WEIGHTS_FILE, weights)
    write_atomic(target / CONFIG_FILE, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    write_atomic(target / CARD_FILE, model_card(manifest, config, base_name, folder_name=str(target)).encode("utf-8"))
    return target


__all__ = ["export_peft", "hub_name", "make_portable", "model_card"]
