"""File helpers every layer may use (a leaf, like ``errors``): atomic writes, JSON files and process liveness."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` so that readers (and a crash) see either the old content or the whole new one, never a part.

    The bytes reach the disk before the rename, so they survive a power cut as well as a killed process.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any, indent: int | None = 1) -> None:
    """``value`` as JSON (UTF-8, written atomically)."""
    write_atomic(Path(path), json.dumps(value, indent=indent, ensure_ascii=False).encode("utf-8"))


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return default


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def pid_alive(pid: Any) -> bool:
    """Whether a process with this id exists on this machine (in this PID namespace).

    Only ``ProcessLookupError`` means it is gone; any other refusal (another user's process) means it exists.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
