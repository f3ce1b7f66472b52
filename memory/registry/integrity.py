"""Whether an adapter folder holds what it should: a loadable PEFT adapter, and files that match checksums.json.

Only the standard library is imported at module level; ``safetensors`` (and torch, to read the weights) are
imported where they are used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lift_tool.errors import CorruptAdapterError
from lift_tool.files import read_json, sha256_file, write_atomic
from lift_tool.memory.manifest import MANIFEST_FILE

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CHECKSUMS_FILE = "checksums.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE)


def files_in(folder: Path) -> list[str]:
    """Relative paths (POSIX style) of the regular files under ``folder``, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_peft_files(folder: Path, where: str) -> None:
    """The folder holds a loadable PEFT adapter: the config parses, the weights have a valid safetensors header."""
    from safetensors import safe_open

    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise CorruptAdapterError(f"the adapter in {where} has no {name}: absorb the document again")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptAdapterError(f"the adapter in {where} has an unreadable {CONFIG_FILE} ({err}): absorb the document again") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise CorruptAdapterError(f"the adapter in {where} has a {CONFIG_FILE} that is not a PEFT config: absorb the document again")
    try:
        # Opening parses the header and checks it against the file's length, which catches truncation.
        with safe_open(str(folder / WEIGHTS_FILE), framework="numpy") as weights:
            if not list(weights.keys()):
                raise CorruptAdapterError(f"the adapter in {where} has no tensors: absorb the document again")
    except CorruptAdapterError:
        raise
    except Exception as err:  # safetensors raises its own error types for malformed files
        raise CorruptAdapterError(f"the adapter in {where} has a damaged {WEIGHTS_FILE} ({err}): absorb the document again") from None


def write_checksums(folder: Path) -> None:
    """Record the sha256 of every file in the folder (but checksums.json itself) in its checksums.json."""
    files = {}
    for name in files_in(folder):
        if name == CHECKSUMS_FILE:
            continue
        with open(folder / name, "rb") as handle:
            os.fsync(handle.fileno())  # the bytes hashed are the bytes on disk, even after a power cut
        files[name] = sha256_file(folder / name)
    write_atomic(folder / CHECKSUMS_FILE, json.dumps({"algorithm": "sha256", "files": files}, indent=1).encode())


def checksum_problem(folder: Path, keep: dict[str, bytes] | None = None) -> str | None:
    """What is wrong with an adapter folder's files, or None when every file matches checksums.json.

    The files named in ``keep`` are read whole and their bytes stored into it, so that a caller can use exactly
    the bytes that were checked (a file changed between a check and a later read would go unnoticed).
    """
    if not folder.is_dir():
        return "its folder is missing"
    if not (folder / CHECKSUMS_FILE).exists():
        return f"file {CHECKSUMS_FILE} is missing"
    recorded = read_json(folder / CHECKSUMS_FILE)
    recorded = recorded.get("files") if isinstance(recorded, dict) else None
    if not isinstance(recorded, dict):
        return f"file {CHECKSUMS_FILE} is unreadable"
    for name in REQUIRED_FILES:
        if name not in recorded:
            return f"file {name} has no recorded checksum"
    for name, expected in sorted(recorded.items()):
        if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
            return f"file {CHECKSUMS_FILE} names a file outside the adapter folder"
        path = folder / name
        if not path.is_file():
            return f"file {name} is missing"
        if keep is not None and name in keep:
            keep[name] = path.read_bytes()
            actual = hashlib.sha256(keep[name]).hexdigest()
        else:
            actual = sha256_file(path)
        if actual != expected:
            return f"file {name} does not match its checksum"
    return None


def weights_problem(folder: Path) -> str | None:
    """What is wrong with an adapter's weights as numbers, or None: they must parse as safetensors and be finite.
    Checksums prove the files are the ones written, not that what was written can be used."""
    import torch
    from safetensors.torch import load

    try:
        tensors = load((folder / WEIGHTS_FILE).read_bytes())
    except Exception as err:  # safetensors raises its own error types for malformed files
        return f"its {WEIGHTS_FILE} is not readable safetensors ({err})"
    if not tensors:
        return f"its {WEIGHTS_FILE} holds no tensors"
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"its weight {name} holds NaN or infinite values"
    return None
