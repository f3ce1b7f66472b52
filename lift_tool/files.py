"""File helpers every layer may use (a leaf, like ``errors``): atomic writes, JSON files, process liveness, and why a
folder cannot be written."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` so that readers (and a crash) see either the old content or the whole new one, never a part.

    The bytes reach the disk before the rename, so they survive a power cut as well as a killed process; a process
    killed before the rename leaves a temporary file beside ``path`` (:func:`is_partial_write`).
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


def is_partial_write(name: str) -> bool:
    """Whether a file name is one of :func:`write_atomic`'s temporary files."""
    return name.startswith(".") and name.endswith(".tmp")


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


@contextmanager
def holding_lock(path: Path) -> Iterator[None]:
    """Create the file ``path`` and hold an exclusive lock on it until the block ends, then remove it.

    Waits while another process holds it. The lock is a sign of life that :func:`lock_is_held` reads from any
    process sharing the filesystem, whatever its PID namespace or host (a process id means nothing there), and the
    kernel drops it when the process ends, however it ends (SIGKILL included). Whoever must not see the file before
    it is locked creates it under a lock of their own.
    """
    path = Path(path)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            locked = os.fstat(handle)
            current = os.stat(path)
            if (locked.st_dev, locked.st_ino) == (current.st_dev, current.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(handle)  # the holder we waited for removed that file: lock the one at the path now
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(handle)


def lock_is_held(path: Path) -> bool:
    """Whether some process holds the lock of :func:`holding_lock` on ``path`` (False when there is no such file)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: a read lock is all a read-only handle may take
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(handle)  # drops our own shared lock at once
    return False


MIN_FREE_BYTES = 2**20  # a disk with less free space than this is full for lift-tool's writes


def write_problem(path: Path, err: BaseException | None = None, ask_filesystem: bool = True) -> str | None:
    """Why writing under ``path`` failed, in words that say what to do, when the cause is the disk: full, read-only,
    or not writable by this user; None when it is something else.

    The error is read first (its errno, then its words: SQLite and Chroma name a full disk in their messages); with
    ``ask_filesystem`` the filesystem itself is asked next (free space, read-only flag, permission), for errors
    that do not say, such as SQLite's "disk I/O error" on a full disk or "unable to open database file" on a
    read-only one.
    """
    path = Path(path)
    code = getattr(err, "errno", None)
    words = str(err or "").lower()
    full = (f"no space left on the disk that holds {path}: free some space, then run the command again")
    read_only = f"{path} is on a read-only filesystem: make it writable, or set LIFT_HOME to a folder on a writable disk"
    denied = f"{path} is not writable by this user: change its permissions, or set LIFT_HOME to a folder you can write"
    if code in (errno.ENOSPC, errno.EDQUOT) or any(w in words for w in ("disk is full", "no space left", "os error 28")):
        return full
    if code == errno.EROFS or any(w in words for w in ("read-only file system", "os error 30")):
        return read_only
    if code in (errno.EACCES, errno.EPERM):
        return denied
    if not ask_filesystem:
        return None
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        disk = os.statvfs(existing)
    except OSError:
        return None
    if disk.f_flag & os.ST_RDONLY:
        return read_only
    if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES or (disk.f_files and not disk.f_favail):
        return full
    if not os.access(existing, os.W_OK):
        return denied
    return None
