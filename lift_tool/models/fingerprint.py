"""Fingerprints of a base model (architecture, config and weights), which adapters record so that an adapter
is never used with another base model than the one it was trained on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lift_tool.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Written into converted model folders; its presence marks a conversion complete.
FINGERPRINT_FILE = "lift_fingerprint.json"


def _config_digest(config: dict[str, Any]) -> str:
    volatile = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "quantization_config", "use_cache"}
    stable = {k: v for k, v in config.items() if k not in volatile}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_folder(folder: Path) -> str:
    """Fingerprint a model folder from its config and the bytes of its weight files (dtype-independent of
    how the model is later loaded). Cached inside converted folders and next to other models in memory."""
    marker = folder / FINGERPRINT_FILE
    if marker.is_file():
        return json.loads(marker.read_text())["fingerprint"]
    config = json.loads((folder / "config.json").read_text())
    digest = hashlib.blake2b(digest_size=16)
    digest.update(_config_digest(config).encode())
    weight_files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weight_files:
        raise ModelError(f"no weight files (*.safetensors or *.bin) in {folder}")
    for file in weight_files:
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return f"{config.get('model_type', 'model')}-{digest.hexdigest()[:20]}"


def fingerprint_model(model: "PreTrainedModel") -> str:
    """Fingerprint a model held in memory (used for models built in-process, such as the test model)."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    digest.update(_config_digest(model.config.to_dict()).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"{model.config.model_type}-{digest.hexdigest()[:20]}"
