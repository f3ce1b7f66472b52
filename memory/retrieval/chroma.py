"""The Chroma client: one per folder and process (reopened when the folder is removed or replaced), or one per
server URL.

Chroma keeps one system per path for the whole process, and a client on a folder that was deleted still
answers reads from the deleted files and fails on writes. ``shared_client`` checks the identity of the
folder's database file on every call and, when it changed, drops that folder's cached system (and only that
one) before opening a new client, so stores see what is on disk now.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from lift_tool.errors import LiftError, ServerError, StorageError
from lift_tool.files import write_problem
from lift_tool.memory.retrieval.embedder import OfflineEmbedder

LOCKED_WAIT_SECONDS = 60.0  # how long opening a store waits for another process that is creating it

_CLIENTS_LOCK = threading.RLock()
_CLIENTS: dict[str, tuple[Any, tuple[int, int]]] = {}  # folder -> (client, identity of its sqlite file)
_FAILED_WRITES: set[str] = set()  # folders whose client failed a write: a writer gets a new one
_SQLITE = "chroma.sqlite3"
_SERVERS: dict[str, Any] = {}  # url -> client


def _register_embedder() -> None:
    from chromadb.utils.embedding_functions import register_embedding_function

    # Registered so that Chroma can rebuild our embedding function from the collection's stored config.
    register_embedding_function(OfflineEmbedder)


def server_client(url: str) -> Any:
    """The process's one client of the Chroma server at ``url`` (``http://host:port``, or https)."""
    from urllib.parse import urlparse

    with _CLIENTS_LOCK:
        if url in _SERVERS:
            return _SERVERS[url]
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerError(f"LIFT_CHROMA__URL must look like http://host:port, got {url!r}")
        import chromadb
        from chromadb.config import Settings

        port = parts.port or (443 if parts.scheme == "https" else 8000)
        try:  # (no embedding function to register: on a server, lift-tool passes the vectors itself)
            client = chromadb.HttpClient(host=parts.hostname, port=port, ssl=parts.scheme == "https",
                                         settings=Settings(anonymized_telemetry=False))
            client.heartbeat()
        except Exception as err:  # noqa: BLE001 - refused, unreachable, not a Chroma server
            raise ServerError(f"the Chroma server at {url} does not answer ({type(err).__name__}: {err}); start it "
                              "(`chroma run`) or unset LIFT_CHROMA__URL to keep the retrieval store in the memory "
                              "folder") from None
        _SERVERS[url] = client
        return client


def _file_identity(folder: str) -> tuple[int, int] | None:
    try:
        st = os.stat(os.path.join(folder, _SQLITE))
    except OSError:  # missing, or the path is not a folder: no database there
        return None
    return st.st_dev, st.st_ino


def _created_beside(err: Exception) -> bool:
    """Whether opening a store failed because another process was creating its database at the same moment."""
    message = str(err)
    return "database is locked" in message or ("table" in message and "already exists" in message)


def _drop_chroma_system(folder: str) -> None:
    """Forget Chroma's cached system for ``folder`` (only that one), so the next client opens the disk anew.

    Chroma keeps one system per path for the whole process. After the folder is removed, that system still
    answers reads from the deleted files and fails on writes ("attempt to write a readonly database"), and a
    new PersistentClient on the same path would get it back. ``clear_system_cache()`` would forget every
    path's system without closing any, so we pop just this one and stop it.
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    system = SharedSystemClient._identifier_to_system.pop(folder, None)
    SharedSystemClient._identifier_to_refcount.pop(folder, None)
    if system is not None:
        try:
            system.stop()
        except Exception:  # noqa: BLE001 - a system on deleted files may fail to stop; it is gone either way
            pass


def write_failed(folder: str) -> None:
    """Note that a write through the client for ``folder`` failed (a full disk, say): Chroma's system may then hang
    on a later write, even once there is space again, so the next writer gets a new client. Readers keep this one
    (on a full disk a new one could not even open)."""
    with _CLIENTS_LOCK:
        _FAILED_WRITES.add(folder)


def shared_client(folder: str, writing: bool = False) -> Any:
    """The process's one Chroma client for ``folder``, reopened if the folder was removed or replaced, or, for a
    writer, if a write through it failed."""
    with _CLIENTS_LOCK:
        if writing and folder in _FAILED_WRITES:
            _FAILED_WRITES.discard(folder)
            _CLIENTS.pop(folder, None)
            _drop_chroma_system(folder)
        identity = _file_identity(folder)
        entry = _CLIENTS.get(folder)
        if entry is not None and identity is not None and entry[1] == identity:
            return entry[0]
        if entry is not None or identity is None:
            _CLIENTS.pop(folder, None)
            _drop_chroma_system(folder)  # stale, or someone else's client on files that are gone
        import chromadb
        from chromadb.config import Settings

        _register_embedder()
        deadline = time.monotonic() + LOCKED_WAIT_SECONDS
        while True:
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(path=folder, settings=Settings(anonymized_telemetry=False))
                break
            except Exception as err:  # not writable, not a folder, opened here with other settings, or locked
                _drop_chroma_system(folder)  # a half-started one would fail every later try, even once the cause is gone
                # Processes that create a store's database at once get "database is locked" from its SQLite
                # without a wait, or "table ... already exists" when the other one made its tables first: try
                # again until the other one is done (the tables it made are then found, not made again).
                if _created_beside(err) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                problem = write_problem(folder, err)
                raise (StorageError if problem else LiftError)(f"cannot open the retrieval store in {folder}: "
                                                                f"{problem or err}") from err
        identity = _file_identity(folder)
        if identity is None:
            raise LiftError(f"Chroma did not create its database in {folder}: check that the folder is writable")
        _CLIENTS[folder] = (client, identity)
        return client
