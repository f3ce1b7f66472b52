"""Fault injection: lift-tool's operations run in real processes that SIGKILL themselves before their Nth change to
the memory, for every N, and a check of what each kill left (driven by tests/test_faults.py).

A step is one change a process makes to the memory: a file created, opened for writing, renamed or removed, a folder
made, an SQLite statement that writes (or commits), a Chroma add or delete. The process counts its steps through
wrappers put around the functions that make them (nothing in lift-tool knows), and kills itself with SIGKILL, so
that nothing of it runs after, just before step N.

Run as a script, this module is a server: it imports everything once (lift-tool, Chroma, the embedding model, the
tiny test model), then reads one JSON command per line and runs each in a child forked for it, so that a case costs a
fork rather than the start of a Python process; it answers one JSON line per command.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

# ------------------------------------------------------------------------------------------ counting steps


class Steps:
    """Counts the changes a process makes and kills the process just before change number ``kill_at``."""

    def __init__(self, kill_at: int | None):
        self.kill_at = kill_at
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        if self.count == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def _exists(path: Any, dir_fd: int | None = None) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd)
        return True
    except OSError:
        return False


def _opens_for_writing(path: Any, flags: int, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> bool:
    writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    return bool(writes) and bool(flags & os.O_TRUNC or not _exists(path, dir_fd))


def count_changes(steps: Steps) -> None:
    """Make every function that changes files, the SQLite index or the Chroma store count a step first."""
    import chromadb.api.models.Collection as chroma_collection

    def counted(function: Callable, changes: Callable[..., bool] = lambda *args, **kwargs: True) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if changes(*args, **kwargs):
                steps()
            return function(*args, **kwargs)

        return wrapper

    for name in ("rename", "replace", "unlink", "remove", "rmdir"):
        setattr(os, name, counted(getattr(os, name)))
    os.mkdir = counted(os.mkdir, lambda path, *args, dir_fd=None, **kwargs: not _exists(path, dir_fd))
    os.open = counted(os.open, _opens_for_writing)
    builtins.open = io.open = counted(io.open, lambda file, mode="r", *args, **kwargs: any(c in mode for c in "wax+"))

    class CountingConnection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if _writes(sql):
                steps()
            return super().execute(sql, *args)

        def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if _writes(sql):
                steps()
            return super().executemany(sql, *args)

    sqlite3.connect = functools.partial(sqlite3.connect, factory=CountingConnection)
    for name in ("add", "upsert", "update", "delete"):
        setattr(chroma_collection.Collection, name, counted(getattr(chroma_collection.Collection, name)))


def _writes(sql: str) -> bool:
    words = sql.split()
    first = words[0].upper() if words else ""
    return first in {"INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "COMMIT"} or (
        first == "PRAGMA" and "=" in sql)


# ---------------------------------------------------------------------------------------------- the memory

LOADED: Any = None  # the tiny model, loaded once by the server
ADAPTER: Path | None = None  # a real PEFT adapter for it, stored in place of training


def make_lift(home: str) -> Any:
    from lift_tool.config import Settings
    from lift_tool.lift import Lift

    return Lift(Settings(model=str(LOADED.path), home=Path(home), device="cpu", dtype="float32"), model=LOADED)


def stored_adapter_instead_of_training(document: Any, loaded: Any, settings: Any, output_dir: Path, **_: Any) -> Any:
    """What training writes into its staging folder (the adapter's files and its manifest), from a ready adapter."""
    from lift_tool.memory.manifest import Manifest

    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copyfile(ADAPTER / name, output_dir / name)
    manifest = Manifest.from_json({
        "doc_id": document.doc_id, "title": document.title, "tokens": len(document.text.split()),
        "base_model": loaded.name, "base_fingerprint": loaded.fingerprint,
        "settings_fingerprint": settings.training_fingerprint(), "train_seconds": 0.5,
        "created": "2025-01-01T00:00:00+00:00", "settings": {}, "backend": "peft", "steps": 1,
    }, str(output_dir))
    manifest.write(output_dir)
    return manifest


def absorb(lift: Any, command: dict) -> Any:
    import lift_tool.training.absorb

    lift_tool.training.absorb.absorb = stored_adapter_instead_of_training
    return lift.absorb(command["text"], title=command["title"], progress=False).document.doc_id


OPERATIONS: dict[str, Callable[[Any, dict], Any]] = {
    "absorb": absorb,
    "index": lambda lift, command: lift.index(command["text"], title=command["title"]).doc_id,
    "forget": lambda lift, command: lift.forget(command["ref"]).doc_id,
    "import": lambda lift, command: lift.import_archive(command["archive"]).doc_id,
    "repair": lambda lift, command: lift.verify(repair=True).repaired,
    "export": lambda lift, command: str(lift.export(command["ref"], command["archive"])),
    "unindex": lambda lift, command: lift.store.remove_document(command["doc_id"]),
}


def run(command: dict) -> dict:
    """One operation on the memory in ``command["home"]``, killed before step ``command["kill_at"]`` (None: never)."""
    lift = make_lift(command["home"])
    steps = Steps(command.get("kill_at"))
    count_changes(steps)
    try:
        outcome = {"value": OPERATIONS[command["operation"]](lift, command)}
    except Exception as err:  # an error the operation reports is an outcome too, not a failure of the harness
        outcome = {"error": f"{type(err).__name__}: {err}"}
    return {"steps": steps.count, **outcome}


def state(lift: Any) -> dict:
    """What the memory holds, seen directly (not through verify): documents, texts, adapters, chunks, leftovers."""
    registry = lift.registry
    documents = {entry.doc_id: len(entry.adapters) for entry in lift.documents()}
    texts_match = all(
        registry.text_path(doc_id).is_file()
        and hashlib.sha256(registry.text_path(doc_id).read_bytes()).hexdigest() == doc_id for doc_id in documents)
    damaged = []
    for entry in lift.documents():
        for adapter in entry.adapters:
            try:
                registry.check_intact(adapter)
            except Exception as err:
                damaged.append(f"{adapter.key}: {err}")
    folders = {name: sorted(os.listdir(registry.home / name))
               for name in ("adapters", "documents", "staging", "forgetting") if (registry.home / name).is_dir()}
    return {"documents": documents, "texts_match": texts_match, "damaged": damaged, "folders": folders,
            "chunks": sorted(lift.store.document_ids())}


def check(command: dict) -> dict:
    """What a kill left: the state, what verify found, what repair did and left, and the state after repair."""
    lift = make_lift(command["home"])
    before = state(lift)
    found = lift.verify().problems()
    repaired = lift.verify(repair=True)
    return {"before": before, "found": found, "repaired": repaired.repaired, "left": repaired.left,
            "after_problems": lift.verify().problems(), "after": state(lift)}


COMMANDS = {"run": run, "check": check}


# ------------------------------------------------------------------------------------------------- server


def in_child(command: dict) -> dict:
    """Run a command in a forked child; whether it was killed, and what it reported if it was not."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            payload = {"result": COMMANDS[command["do"]](command)}
        except BaseException:
            payload = {"failure": traceback.format_exc()}
        with os.fdopen(write_end, "w") as out:
            out.write(json.dumps(payload))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reply:
        data = reply.read()
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return {"killed": killed, **(json.loads(data) if data else {})}


def serve(model_dir: str, adapter_dir: str) -> None:
    global LOADED, ADAPTER
    import torch

    torch.set_num_threads(1)  # no thread pool that forked children would inherit half-made
    from lift_tool.config import Settings
    from lift_tool.memory.retrieval.embedder import OfflineEmbedder, embedding_tokenizer
    from lift_tool.models import load_model

    import chromadb  # noqa: F401 - imported once here, opened only in the children
    import lift_tool.lift  # noqa: F401
    import lift_tool.training.absorb  # noqa: F401

    OfflineEmbedder()(["warm up"])
    embedding_tokenizer()
    LOADED = load_model(settings=Settings(model=model_dir, device="cpu", dtype="float32"))
    ADAPTER = Path(adapter_dir)
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(in_child(json.loads(line))), flush=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
