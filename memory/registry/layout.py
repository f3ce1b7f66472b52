"""Where everything lives under a registry's home directory, the writers' lock, and connections to its index.

::

    registry.sqlite            the index (index.py)
    registry.lock              held by whoever is changing the index and the folders together
    documents/<doc_id>.txt     the normalised text of every known document
    adapters/<key>/            one PEFT adapter: adapter_config.json, adapter_model.safetensors,
                               lift_manifest.json (written by absorption), checksums.json (written by the registry)
    staging/<pid>-<random>/    adds in progress; stale ones are garbage
    staging/<pid>-<random>.lock  locked by the process using that folder, as long as it lives
    staging/absorbing-<doc_id>.lock  locked while that document is absorbed: a second absorption waits
    forgetting/<doc_id>        a forget in progress: if it dies half-way, repair finishes it (never undoes it)
    adding/<doc_id>            a text stored for a row not yet written: if the add dies first, repair removes the text
    unfinished/<doc_id>/       the last checkpoint of an absorption of that document that has not ended (resumed by
                               the next one); removed when its adapter is stored or the document forgotten
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from lift_tool.errors import InputError
from lift_tool.files import holding_lock
from lift_tool.memory.manifest import DOC_ID, title_problem
from lift_tool.memory.registry import index

LOCK_TIMEOUT_S = 300.0  # how long a writer waits for registry.lock (verify holds it while hashing every adapter)


def check_doc_id(doc_id: str) -> None:
    # Ids become file names: anything but a sha256 hex digest is refused (it could name a path elsewhere).
    if not isinstance(doc_id, str) or not DOC_ID.fullmatch(doc_id):
        raise InputError(f"{doc_id!r} is not a document id (a sha256 hex digest of the document's text)")


def check_title(title: str) -> None:
    problem = title_problem(title)
    if problem:
        raise InputError(f"{title!a} cannot be a document's title: {problem}")


def staging_lock(folder: Path) -> Path:
    """The lock file beside a staging folder, held by the process using the folder."""
    return folder.with_name(folder.name + ".lock")


def absorbing_lock(staging_dir: Path, doc_id: str) -> Path:
    """The lock file held while a document is absorbed."""
    return staging_dir / f"absorbing-{doc_id}.lock"


class Layout:
    """The folders and files under one home directory.

    Every call that touches them recreates the folders first, so a home directory deleted under a running
    process comes back (empty) instead of writes going to a deleted file.
    """

    def __init__(self, home: Path | str):
        self.home = Path(home).expanduser()
        from filelock import FileLock  # small, but only writers need it

        self._lock = FileLock(str(self.home / "registry.lock"), timeout=LOCK_TIMEOUT_S)

    @property
    def db_path(self) -> Path:
        return self.home / "registry.sqlite"

    @property
    def documents_dir(self) -> Path:
        return self.home / "documents"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def forgetting_dir(self) -> Path:
        return self.home / "forgetting"

    @property
    def adding_dir(self) -> Path:
        return self.home / "adding"

    @property
    def unfinished_dir(self) -> Path:
        return self.home / "unfinished"

    def unfinished_path(self, doc_id: str) -> Path:
        """The checkpoint folder of an absorption of ``doc_id`` that has not ended (created by training)."""
        check_doc_id(doc_id)
        return self.unfinished_dir / doc_id

    def text_path(self, doc_id: str) -> Path:
        return self.documents_dir / f"{doc_id}.txt"

    def adapter_path(self, key: str) -> Path:
        return self.adapters_dir / key

    def new_staging_path(self) -> Path:
        """A name for a new folder in staging/ (not created); the pid in it tells gc whose it is."""
        return self.staging_dir / f"{os.getpid()}-{secrets.token_hex(8)}"

    @contextmanager
    def staging_folder(self) -> Iterator[Path]:
        """A fresh empty folder in staging/, locked (:func:`staging_lock`) while the block runs and removed after it.

        The folder and its lock appear together under registry.lock, which repair holds while it looks, so repair
        never sees the folder unlocked while its owner lives, whatever the owner's PID namespace or host.
        """
        folder = self.new_staging_path()
        with ExitStack() as held:
            with self.writing():
                held.enter_context(holding_lock(staging_lock(folder)))
                folder.mkdir()
            try:
                yield folder
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    def ensure(self) -> None:
        """Create the home and its folders where they are missing."""
        for folder in (self.home, self.documents_dir, self.adapters_dir, self.staging_dir, self.forgetting_dir,
                       self.adding_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def discard(self, folder: Path) -> None:
        """Remove a folder in one step as everyone else sees it: renamed into staging/ (where what a killed process
        leaves is garbage), then deleted."""
        if not folder.is_dir() or folder.is_symlink():
            folder.unlink(missing_ok=True)
            return
        aside = self.new_staging_path()
        os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection to the index (see :func:`index.connect`)."""
        self.ensure()
        with index.connect(self.db_path) as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold registry.lock: the index and the folders change together."""
        self.ensure()
        with self._lock:
            yield
