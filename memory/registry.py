"""The adapter registry: a SQLite index plus plain PEFT adapter folders, kept in step.

Everything lives under one directory, ``home``::

    registry.sqlite            the index (WAL; concurrent processes wait for each other, they do not fail)
    registry.lock              held by whoever is changing the index and the folders together
    documents/<doc_id>.txt     the normalised text of every known document
    adapters/<key>/            one PEFT adapter: adapter_config.json, adapter_model.safetensors,
                               lift_manifest.json (written by absorption), checksums.json (written here)
    staging/<pid>-<random>/    adds in progress; stale ones are garbage

How it stays consistent:

- Writers (adding, removing, repairing) hold ``registry.lock``, a file lock, so the index and the folders change
  together even when several processes share one home. Readers only use SQLite, which in WAL mode never blocks
  them.
- Adds write files first and the index last: an adapter is saved into a staging folder, checked, renamed into
  ``adapters/`` and only then given its index row. Removals change the index first and the files after. A crash at
  any point therefore leaves at worst a folder or a text file that no row mentions (``gc()`` removes it), never a
  row that points at nothing.
- An adapter's key is content-addressed (document, base model, training settings), so absorbing the same text
  again with the same model and settings finds the stored adapter instead of training a new one.

Only the standard library is imported at module level; ``safetensors`` is imported where a header is checked.
"""

from __future__ import annotations

import errno
import functools
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import tarfile
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from lift_tool.errors import (
    AmbiguousDocumentError,
    CorruptAdapterError,
    IncompatibleAdapterError,
    InputError,
    LiftError,
    StorageError,
    UnknownDocumentError,
)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "lift_manifest.json"
CHECKSUMS_FILE = "checksums.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE)
ARCHIVE_INDEX = "lift-memory.json"  # the document row and adapter rows inside an exported archive
ARCHIVE_TEXT = "document.txt"

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0  # how long a process waits for another one's write transaction before giving up
LOCK_TIMEOUT_S = 300.0  # how long a writer waits for registry.lock (verify holds it while hashing every adapter)
STALE_STAGING_S = 3600.0  # a staging folder untouched for this long is garbage, whoever owns it
MIN_PREFIX = 4  # shortest id prefix that resolve() accepts
SHORT_ID = 12  # how many hex characters lists and messages show

_DOC_ID = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[0-9a-f]{24}")
_MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "doc_id": str,
    "title": str,
    "tokens": int,
    "base_model": str,
    "base_fingerprint": str,
    "settings_fingerprint": str,
    "train_seconds": (int, float),
    "created": str,
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id  TEXT PRIMARY KEY,
    title   TEXT NOT NULL,
    tokens  INTEGER NOT NULL,
    route   TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS adapters (
    key                  TEXT PRIMARY KEY,
    doc_id               TEXT NOT NULL REFERENCES documents(doc_id),
    base_model           TEXT NOT NULL,
    base_fingerprint     TEXT NOT NULL,
    settings_fingerprint TEXT NOT NULL,
    created              TEXT NOT NULL,
    size_bytes           INTEGER NOT NULL,
    train_seconds        REAL NOT NULL,
    manifest             TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS adapters_by_document ON adapters (doc_id, base_fingerprint);
"""


# ------------------------------------------------------------------------------------------------------ rows


@dataclass
class AdapterEntry:
    """One stored adapter: a row of the index plus where its folder is."""

    key: str
    doc_id: str
    title: str
    tokens: int
    base_model: str
    base_fingerprint: str
    settings_fingerprint: str
    created: str
    size_bytes: int
    train_seconds: float
    path: Path
    manifest: dict[str, Any] = field(repr=False)


@dataclass
class DocumentEntry:
    """One known document, with the adapters absorbed from it (none for retrieval-only or in-context ones)."""

    doc_id: str
    title: str
    tokens: int
    created: str
    route: str  # "absorb", "retrieve", "context", ...
    adapters: list[AdapterEntry] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.doc_id[:SHORT_ID]

    @property
    def base_models(self) -> list[str]:
        return sorted({adapter.base_model for adapter in self.adapters})

    @property
    def size_bytes(self) -> int:
        return sum(adapter.size_bytes for adapter in self.adapters)

    @property
    def train_seconds(self) -> float:
        return sum(adapter.train_seconds for adapter in self.adapters)


@dataclass
class VerifyReport:
    """What ``verify()`` / ``gc()`` found, and with ``repair`` what they did about it."""

    checked: int = 0  # adapters whose checksums were recomputed
    damaged: dict[str, str] = field(default_factory=dict)  # adapter key -> what is wrong with its files
    missing_folders: list[str] = field(default_factory=list)  # adapter rows whose folder is gone
    orphan_folders: list[str] = field(default_factory=list)  # folders under adapters/ that no row mentions
    missing_texts: list[str] = field(default_factory=list)  # document rows whose text file is gone
    orphan_texts: list[str] = field(default_factory=list)  # text files that no document row mentions
    stale_staging: list[str] = field(default_factory=list)  # leftovers of interrupted adds
    repaired: list[str] = field(default_factory=list)  # one line per action taken

    @property
    def ok(self) -> bool:
        """True when the index and the folders agree and every adapter checked is intact."""
        return not (
            self.damaged
            or self.missing_folders
            or self.orphan_folders
            or self.missing_texts
            or self.orphan_texts
            or self.stale_staging
        )

    def problems(self) -> list[str]:
        """One readable line per problem found (what ``lift verify`` prints)."""
        lines = [f"adapter {key}: {problem}" for key, problem in self.damaged.items()]
        lines += [f"adapter {key}: its folder is missing" for key in self.missing_folders]
        lines += [f"adapters/{name}: a folder that no index row mentions" for name in self.orphan_folders]
        lines += [f"document {doc_id[:SHORT_ID]}: its text file is missing" for doc_id in self.missing_texts]
        lines += [f"documents/{name}: a text file that no index row mentions" for name in self.orphan_texts]
        lines += [f"staging/{name}: left over from an interrupted add" for name in self.stale_staging]
        return lines


# ------------------------------------------------------------------------------------------------- helpers


def adapter_key(doc_id: str, base_fingerprint: str, settings_fingerprint: str) -> str:
    """The content address of an adapter: the same text, base model and settings give the same key."""
    blob = f"{doc_id}|{base_fingerprint}|{settings_fingerprint}".encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old content or the whole new one, never a part."""
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


def _files_in(folder: Path) -> list[str]:
    """Relative paths (POSIX style) of the regular files under ``folder``, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is someone else's
        return True
    except OSError:
        return False
    return True


def _storage_message(home: Path, err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"no space left on the disk that holds {home}: free some space and try again"
    if isinstance(err, sqlite3.OperationalError) and "full" in str(err):
        return f"no space left on the disk that holds {home}: free some space and try again"
    if isinstance(err, TimeoutError):  # filelock.Timeout
        return f"another lift process has been writing to {home} for too long: wait for it to finish, then try again"
    if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
        return f"the memory index in {home} stayed locked by another lift process: try again when it has finished"
    if isinstance(err, sqlite3.DatabaseError) and ("not a database" in str(err) or "malformed" in str(err)):
        return f"the memory index {home / 'registry.sqlite'} is damaged ({err}): move it away and absorb the documents again"
    if isinstance(err, sqlite3.Error):
        return f"could not use the memory index {home / 'registry.sqlite'} ({err}): try again"
    return f"could not use the memory folder {home} ({err}): check that it exists and is writable"


def _clear_errors(method):
    """Turn raw sqlite3/OS errors into a StorageError that says what to do; project errors pass through."""

    @functools.wraps(method)
    def wrapper(self: "Registry", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except LiftError:
            raise
        except (sqlite3.Error, OSError) as err:
            raise StorageError(_storage_message(self.home, err)) from err

    return wrapper


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _validate_manifest(manifest: Any, where: str) -> dict[str, Any]:
    def bad(problem: str) -> CorruptAdapterError:
        return CorruptAdapterError(f"the adapter in {where} has an invalid {MANIFEST_FILE} ({problem}): absorb the document again")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    for name, kind in _MANIFEST_FIELDS.items():
        if name not in manifest:
            raise bad(f"no {name!r}")
        value = manifest[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"{name!r} has the wrong type")
    if not _DOC_ID.fullmatch(manifest["doc_id"]):
        raise bad("'doc_id' is not a sha256 hex digest")
    if not manifest["title"].strip():
        raise bad("'title' is empty")
    return manifest


def _check_peft_files(folder: Path, where: str) -> None:
    """The folder holds a loadable PEFT adapter: the config parses, the weights have a valid safetensors header."""
    from safetensors import safe_open

    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise CorruptAdapterError(f"the adapter in {where} has no {name}: absorb the document again")
    try:
        config = _read_json(folder / CONFIG_FILE)
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


def _checksum_problem(folder: Path, keep: dict[str, bytes] | None = None) -> str | None:
    """What is wrong with an adapter folder's files, or None when every file matches checksums.json.

    The files named in ``keep`` are read whole and their bytes stored into it, so that a caller can use exactly
    the bytes that were checked (a file changed between a check and a later read would go unnoticed).
    """
    if not folder.is_dir():
        return "its folder is missing"
    try:
        recorded = _read_json(folder / CHECKSUMS_FILE)["files"]
    except FileNotFoundError:
        return f"file {CHECKSUMS_FILE} is missing"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"file {CHECKSUMS_FILE} is unreadable"
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
            actual = _sha256_file(path)
        if actual != expected:
            return f"file {name} does not match its checksum"
    return None


@dataclass
class _Staged:
    """An adapter folder checked and ready to be renamed into adapters/."""

    folder: Path
    key: str
    manifest: dict[str, Any]


# ---------------------------------------------------------------------------------------------- the registry


class Registry:
    """The index of documents and adapters under one home directory.

    Safe to use from several threads and processes at once. Every call opens its own SQLite connection, so a
    Registry object can be shared between threads, and a home directory deleted under a running process is
    recreated (empty) by the next call instead of writes going to a deleted file.
    """

    def __init__(self, home: Path | str):
        self.home = Path(home).expanduser()
        from filelock import FileLock  # small, but only writers need it

        self._lock = FileLock(str(self.home / "registry.lock"), timeout=LOCK_TIMEOUT_S)

    # ---- layout

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

    def text_path(self, doc_id: str) -> Path:
        return self.documents_dir / f"{doc_id}.txt"

    def adapter_path(self, key: str) -> Path:
        return self.adapters_dir / key

    def _ensure_layout(self) -> None:
        for folder in (self.home, self.documents_dir, self.adapters_dir, self.staging_dir):
            folder.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode; callers open transactions explicitly (BEGIN / BEGIN IMMEDIATE)."""
        self._ensure_layout()
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            # WAL lets readers run while a writer commits (a no-op once set: it is stored in the file).
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # in WAL mode a crash may lose the last commit, never corrupt
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._create_schema(conn)
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        # Several processes may get here at once on a new file: IF NOT EXISTS makes the later ones no-ops.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold registry.lock: the index and the folders change together."""
        self._ensure_layout()
        with self._lock:
            yield

    # ---- documents

    @_clear_errors
    def add_document(
        self,
        doc_id: str,
        title: str | None,
        text: str | None,
        tokens: int | None,
        route: str | None = None,
    ) -> DocumentEntry:
        """Register a document (its text and its row). Idempotent: adding a known doc_id again never duplicates
        it; a title or route given again replaces the stored one, ``None`` keeps it.

        A new document needs ``title``, ``text`` and ``tokens``; its route defaults to "absorb".
        """
        _check_doc_id(doc_id)
        with self._writing(), self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT * FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
                if row is None and (title is None or text is None or tokens is None):
                    raise InputError(f"document {doc_id[:SHORT_ID]} is new: give its title, text and token count")
                # The text before the row: a crash in between leaves an orphan text file, which gc removes.
                if text is not None and not self.text_path(doc_id).is_file():
                    _write_atomic(self.text_path(doc_id), text.encode("utf-8"))
                if row is None:
                    conn.execute(
                        "INSERT INTO documents (doc_id, title, tokens, route, created) VALUES (?, ?, ?, ?, ?)",
                        (doc_id, title, int(tokens), route or "absorb", _now()),
                    )
                else:
                    conn.execute(
                        "UPDATE documents SET title = COALESCE(?, title), route = COALESCE(?, route) WHERE doc_id = ?",
                        (title, route, doc_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return self._document(conn, doc_id)

    @_clear_errors
    def document_text(self, doc_id: str) -> str:
        """The stored normalised text of a document."""
        _check_doc_id(doc_id)
        try:
            return self.text_path(doc_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UnknownDocumentError(
                f"the text of document {doc_id[:SHORT_ID]} is not stored: add the document again "
                "(`lift verify` lists what is missing)"
            ) from None

    @_clear_errors
    def get_document(self, doc_id: str) -> DocumentEntry | None:
        """The document with exactly this id, or None."""
        with self._connect() as conn:
            return self._document(conn, doc_id)

    @_clear_errors
    def list_documents(self) -> list[DocumentEntry]:
        """Every known document, oldest first, with its adapters (what `lift list` prints)."""
        with self._connect() as conn:
            conn.execute("BEGIN")  # one snapshot for both queries
            try:
                documents = [self._document_from_row(row) for row in conn.execute("SELECT * FROM documents ORDER BY created, rowid")]
                by_id = {document.doc_id: document for document in documents}
                for row in conn.execute(_ADAPTER_QUERY + " ORDER BY a.rowid"):
                    by_id[row["doc_id"]].adapters.append(self._adapter_from_row(row))
            finally:
                conn.execute("COMMIT")
        return documents

    @_clear_errors
    def resolve(self, ref: str) -> DocumentEntry:
        """Find a document by full id, by an unambiguous id prefix (at least 4 characters) or by exact title.

        A title that matches wins over an id prefix that matches; a title shared by several documents, or a
        prefix shared by several ids, is ambiguous.
        """
        hex_ref = ref.strip().lower()
        with self._connect() as conn:
            conn.execute("BEGIN")  # one snapshot: a document removed meanwhile is not half found
            try:
                exact = self._document(conn, hex_ref)
                if exact is not None:
                    return exact
                rows = conn.execute("SELECT doc_id FROM documents WHERE title = ? ORDER BY created, rowid", (ref,)).fetchall()
                if not rows and len(hex_ref) >= MIN_PREFIX and re.fullmatch(r"[0-9a-f]+", hex_ref):
                    rows = conn.execute(
                        "SELECT doc_id FROM documents WHERE substr(doc_id, 1, ?) = ? ORDER BY created, rowid",
                        (len(hex_ref), hex_ref),
                    ).fetchall()
                candidates = [self._document(conn, row["doc_id"]) for row in rows]
            finally:
                conn.execute("COMMIT")
        if not candidates:
            raise UnknownDocumentError(f"no absorbed document matches {ref!r}: run `lift list` to see what is stored")
        if len(candidates) > 1:
            listed = ", ".join(f"{doc.short_id} ({doc.title})" for doc in candidates)
            raise AmbiguousDocumentError(
                f"{ref!r} matches {len(candidates)} documents: {listed}; name one by its id (a longer prefix will do)"
            )
        return candidates[0]

    # ---- adapters

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh empty folder on the same filesystem as ``adapters/``, removed when the block exits.

        Save the adapter and its manifest into it, then call :meth:`add_adapter` inside the block. ``gc()`` leaves
        it alone while this process lives (up to a day).
        """
        try:
            self._ensure_layout()
            folder = self.staging_dir / f"{os.getpid()}-{secrets.token_hex(8)}"
            folder.mkdir()
        except OSError as err:
            raise StorageError(_storage_message(self.home, err)) from err
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @_clear_errors
    def add_adapter(self, staged_folder: Path | str, text: str | None = None) -> AdapterEntry:
        """Store the adapter saved in ``staged_folder`` (from :meth:`staging`) and return its entry.

        The folder must hold ``adapter_config.json``, ``adapter_model.safetensors`` and ``lift_manifest.json``.
        The document's text must already be stored (:meth:`add_document`) or be passed as ``text``; its row is
        created from the manifest if missing. If an intact adapter with the same key is stored already, it is
        kept and the staged copy discarded. Atomic: on any failure nothing is added and the staged folder is left
        as it was, for a retry. A folder outside ``staging/`` (perhaps on another filesystem) is copied in, not
        moved, and left alone.
        """
        with self._inside_staging(Path(staged_folder)) as folder:
            staged = self._prepare(folder)
            manifest = staged.manifest
            document = {"doc_id": manifest["doc_id"], "title": manifest["title"], "tokens": manifest["tokens"], "route": "absorb"}
            self._commit(document, text, [staged])
        return self._adapter_entry(staged.key)

    @contextmanager
    def _inside_staging(self, folder: Path) -> Iterator[Path]:
        """The folder itself if it lies in staging/, else a copy there (renames only work within a filesystem,
        and a caller's own folder is not ours to change)."""
        if folder.is_dir() and self.staging_dir.resolve() not in folder.resolve().parents:
            self._ensure_layout()
            copy = self._new_staging_path()
            try:
                shutil.copytree(folder, copy)
                yield copy
            finally:
                shutil.rmtree(copy, ignore_errors=True)
        else:
            yield folder

    def _prepare(self, folder: Path) -> _Staged:
        """Check a staged adapter folder and write its checksums.json (outside the lock: it reads every byte)."""
        where = str(folder)
        if not folder.is_dir():
            raise CorruptAdapterError(f"the staged adapter folder {folder} does not exist (was the memory folder removed?)")
        if not (folder / MANIFEST_FILE).is_file():
            raise CorruptAdapterError(f"the adapter in {where} has no {MANIFEST_FILE}: absorption must write it")
        try:
            manifest = _validate_manifest(_read_json(folder / MANIFEST_FILE), where)
        except (ValueError, UnicodeDecodeError) as err:
            raise CorruptAdapterError(f"the adapter in {where} has an unreadable {MANIFEST_FILE} ({err}): absorb the document again") from None
        _check_peft_files(folder, where)
        self._write_checksums(folder)
        key = adapter_key(manifest["doc_id"], manifest["base_fingerprint"], manifest["settings_fingerprint"])
        return _Staged(folder=folder, key=key, manifest=manifest)

    def _write_checksums(self, folder: Path) -> None:
        files = {}
        for name in _files_in(folder):
            if name == CHECKSUMS_FILE:
                continue
            with open(folder / name, "rb") as handle:
                os.fsync(handle.fileno())  # the bytes hashed are the bytes on disk, even after a power cut
            files[name] = _sha256_file(folder / name)
        _write_atomic(folder / CHECKSUMS_FILE, json.dumps({"algorithm": "sha256", "files": files}, indent=1).encode())

    def _commit(self, document: dict[str, Any], text: str | None, staged: list[_Staged]) -> None:
        """Rename staged adapter folders (in staging/) into adapters/ and insert their rows, all or nothing.

        ``document`` is the row to create if the document is unknown (title, tokens, route).
        """
        with self._writing():
            self._commit_locked(document, text, staged)
        for item in staged:  # what is still there duplicated an adapter stored already
            shutil.rmtree(item.folder, ignore_errors=True)

    def _commit_locked(self, document: dict[str, Any], text: str | None, staged: list[_Staged]) -> None:
        doc_id = document["doc_id"]
        if text is not None and not self.text_path(doc_id).is_file():
            _write_atomic(self.text_path(doc_id), text.encode("utf-8"))
        if not self.text_path(doc_id).is_file():
            raise InputError(
                f"the text of document {doc_id[:SHORT_ID]} is not stored: call add_document() before add_adapter(), "
                "or pass the text"
            )
        moved: list[tuple[Path, Path]] = []  # (stored folder, where it came from), to undo on failure
        displaced: list[tuple[Path, Path]] = []  # (damaged copy moved aside, where it was)
        try:
            rows = []
            for item in staged:
                target = self.adapter_path(item.key)
                if target.is_dir():
                    if _checksum_problem(target) is None:
                        # The same content is stored already: keep it (and its manifest), restore its row if lost.
                        stored = _read_json(target / MANIFEST_FILE)
                        rows.append(_Staged(folder=target, key=item.key, manifest=stored))
                        continue
                    aside = self._new_staging_path()
                    os.rename(target, aside)  # a damaged copy under the same key: replace it
                    displaced.append((aside, target))
                os.rename(item.folder, target)
                moved.append((target, item.folder))
                rows.append(item)
            with self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._insert_rows(conn, document, rows)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except BaseException:
            # Undo in reverse: nothing under adapters/ may be left without its row.
            for target, origin in reversed(moved):
                try:
                    os.rename(target, origin)
                except OSError:
                    shutil.rmtree(target, ignore_errors=True)
            for aside, target in reversed(displaced):
                try:
                    os.rename(aside, target)
                except OSError:
                    pass
            raise
        for aside, _ in displaced:
            shutil.rmtree(aside, ignore_errors=True)

    def _insert_rows(self, conn: sqlite3.Connection, document: dict[str, Any], staged: list[_Staged]) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO documents (doc_id, title, tokens, route, created) VALUES (?, ?, ?, ?, ?)",
            (document["doc_id"], document["title"], int(document["tokens"]), document.get("route") or "absorb", document.get("created") or _now()),
        )
        for item in staged:
            manifest = item.manifest
            conn.execute(
                "INSERT OR REPLACE INTO adapters (key, doc_id, base_model, base_fingerprint, settings_fingerprint, "
                "created, size_bytes, train_seconds, manifest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.key,
                    manifest["doc_id"],
                    manifest["base_model"],
                    manifest["base_fingerprint"],
                    manifest["settings_fingerprint"],
                    manifest["created"],
                    _folder_size(self.adapter_path(item.key)),
                    float(manifest["train_seconds"]),
                    json.dumps(manifest, sort_keys=True),
                ),
            )

    def _new_staging_path(self) -> Path:
        """A name for a new folder in staging/ (not created); the pid in it tells gc whose it is."""
        return self.staging_dir / f"{os.getpid()}-{secrets.token_hex(8)}"

    @_clear_errors
    def find_adapter(self, doc_id: str, base_fingerprint: str, settings_fingerprint: str | None = None) -> AdapterEntry | None:
        """The cache lookup: the stored adapter for this document, base model and settings (with settings
        ``None``: the newest one for this document and base model), or None."""
        query = _ADAPTER_QUERY + " WHERE a.doc_id = ? AND a.base_fingerprint = ?"
        args: list[Any] = [doc_id, base_fingerprint]
        if settings_fingerprint is not None:
            query += " AND a.settings_fingerprint = ?"
            args.append(settings_fingerprint)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY a.rowid DESC", args).fetchall()
        for row in rows:
            entry = self._adapter_from_row(row)
            if entry.path.is_dir():  # a row whose folder went missing is no cache hit (verify reports it)
                return entry
        return None

    @_clear_errors
    def adapter_for(self, ref: str, base_fingerprint: str, base_model: str | None = None) -> AdapterEntry:
        """The adapter of the document ``ref`` for the base model in use (the newest, if there are several).

        ``base_model`` (the name of the model in use) only makes the error message clearer.
        """
        document = self.resolve(ref)
        matching = [adapter for adapter in document.adapters if adapter.base_fingerprint == base_fingerprint]
        if matching:
            return matching[-1]
        if document.adapters:
            trained_on = ", ".join(sorted({f"{a.base_model} ({a.base_fingerprint})" for a in document.adapters}))
            in_use = f"{base_model} ({base_fingerprint})" if base_model else base_fingerprint
            raise IncompatibleAdapterError(
                f"'{document.title}' was absorbed with {trained_on}, but the model in use is {in_use}: "
                "use that model (--model), or absorb the document again with this one"
            )
        raise UnknownDocumentError(
            f"'{document.title}' has no adapter (it was stored for {document.route}, not absorbed): "
            "absorb it to answer from an adapter, or ask with retrieval"
        )

    @_clear_errors
    def check_intact(self, entry: AdapterEntry) -> None:
        """Recompute an adapter's checksums before it is loaded; raise CorruptAdapterError if they differ."""
        self._raise_if_damaged(entry, _checksum_problem(entry.path))

    @_clear_errors
    def read_intact(self, entry: AdapterEntry, name: str = WEIGHTS_FILE) -> bytes:
        """Check all of an adapter's files like :meth:`check_intact` and return the bytes of one of them, read
        once: what the caller loads is exactly what was checked."""
        keep = {name: b""}
        self._raise_if_damaged(entry, _checksum_problem(entry.path, keep))
        return keep[name]

    @staticmethod
    def _raise_if_damaged(entry: AdapterEntry, problem: str | None) -> None:
        if problem is not None:
            raise CorruptAdapterError(
                f"adapter for '{entry.title}' is damaged ({problem}): run `lift verify --repair` and absorb the "
                "document again"
            )

    # ---- removal and repair

    @_clear_errors
    def remove(self, ref: str) -> DocumentEntry:
        """Forget a document: its row, its adapters and its text. Returns what was removed.

        The index changes first, in one transaction, the files after: a crash in between leaves folders that no
        row mentions (gc removes them), never a row without its folder.
        """
        document = self.resolve(ref)
        with self._writing():
            with self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    keys = [row["key"] for row in conn.execute("SELECT key FROM adapters WHERE doc_id = ?", (document.doc_id,))]
                    conn.execute("DELETE FROM adapters WHERE doc_id = ?", (document.doc_id,))
                    conn.execute("DELETE FROM documents WHERE doc_id = ?", (document.doc_id,))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            for key in keys:
                shutil.rmtree(self.adapter_path(key), ignore_errors=True)
            self.text_path(document.doc_id).unlink(missing_ok=True)
        return document

    @_clear_errors
    def verify(self, repair: bool = False) -> VerifyReport:
        """Check that the index and the folders agree and that every adapter's files match their checksums.

        With ``repair``: remove damaged adapters (row and folder; the document stays, absorb it again), plus
        everything :meth:`gc` removes. Intact committed adapters are never touched.
        """
        return self._check(hash_files=True, repair=repair)

    @_clear_errors
    def gc(self) -> VerifyReport:
        """Remove what interrupted operations left behind: folders and text files no row mentions, stale
        staging folders, and rows whose folder is gone. Does not hash files (see :meth:`verify`)."""
        return self._check(hash_files=False, repair=True)

    def _check(self, hash_files: bool, repair: bool) -> VerifyReport:
        report = VerifyReport()
        with self._writing():  # a consistent view: no add or remove is half-way while we look
            with self._connect() as conn:
                adapter_rows = {row["key"]: row["doc_id"] for row in conn.execute("SELECT key, doc_id FROM adapters")}
                doc_ids = {row["doc_id"] for row in conn.execute("SELECT doc_id FROM documents")}
            for key in sorted(adapter_rows):
                folder = self.adapter_path(key)
                if not folder.is_dir():
                    report.missing_folders.append(key)
                elif hash_files:
                    report.checked += 1
                    problem = _checksum_problem(folder)
                    if problem is not None:
                        report.damaged[key] = problem
            report.orphan_folders = sorted(p.name for p in self.adapters_dir.iterdir() if p.name not in adapter_rows)
            report.missing_texts = sorted(doc_id for doc_id in doc_ids if not self.text_path(doc_id).is_file())
            report.orphan_texts = sorted(
                p.name for p in self.documents_dir.iterdir() if not (p.suffix == ".txt" and p.stem in doc_ids)
            )
            report.stale_staging = sorted(p.name for p in self.staging_dir.iterdir() if self._is_stale(p))
            if repair:
                self._repair(report)
        return report

    def _repair(self, report: VerifyReport) -> None:
        dropped = report.missing_folders + list(report.damaged)
        if dropped:
            with self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("DELETE FROM adapters WHERE key = ?", [(key,) for key in dropped])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            report.repaired += [f"dropped the row of adapter {key} (its folder is missing)" for key in report.missing_folders]
            report.repaired += [f"removed damaged adapter {key} ({problem})" for key, problem in report.damaged.items()]
        for key in report.damaged:  # rows first (above), then files
            shutil.rmtree(self.adapter_path(key), ignore_errors=True)
        for name in report.orphan_folders:
            _remove_path(self.adapters_dir / name)
            report.repaired.append(f"removed adapters/{name} (no index row)")
        for name in report.orphan_texts:
            _remove_path(self.documents_dir / name)
            report.repaired.append(f"removed documents/{name} (no index row)")
        for name in report.stale_staging:
            _remove_path(self.staging_dir / name)
            report.repaired.append(f"removed staging/{name} (interrupted add)")
        if report.missing_texts:
            report.repaired.append(
                f"left {len(report.missing_texts)} document(s) without text as they are: add them again to restore it"
            )

    def _is_stale(self, path: Path) -> bool:
        """A staging entry is garbage when its owner process is dead, or when nobody touched it for a long time:
        an hour for folders without a known owner, a day for a living owner (a long absorption, or a reused pid)."""
        owner = path.name.split("-", 1)[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            return True
        limit = STALE_STAGING_S * 24 if owner.isdigit() else STALE_STAGING_S
        try:
            # Age counts from the last change to the folder or a file in it, so a folder being written is fresh.
            touched = [path.lstat().st_mtime]
            if path.is_dir() and not path.is_symlink():
                touched += [child.lstat().st_mtime for child in path.iterdir()]
        except OSError:
            return False  # it vanished while we looked: its owner finished
        return time.time() - max(touched) > limit

    # ---- export and import

    @_clear_errors
    def export(self, ref: str, file: Path | str) -> Path:
        """Write one document's memory (text, row, adapters with manifests and checksums) as a tar.gz archive.

        Damaged adapters are refused rather than exported. The archive appears complete or not at all.
        """
        document = self.resolve(ref)
        for adapter in document.adapters:
            self.check_intact(adapter)
        text = self.document_text(document.doc_id).encode("utf-8")
        index = {
            "format": "lift-memory",
            "version": 1,
            "document": {k: getattr(document, k) for k in ("doc_id", "title", "tokens", "route", "created")},
            "text_sha256": hashlib.sha256(text).hexdigest(),
            "adapters": [adapter.key for adapter in document.adapters],
        }
        file = Path(file)
        temp = file.with_name(f".{file.name}.{secrets.token_hex(4)}.tmp")
        try:
            with tarfile.open(temp, "w:gz") as archive:
                _add_bytes(archive, ARCHIVE_INDEX, json.dumps(index, indent=1).encode())
                _add_bytes(archive, ARCHIVE_TEXT, text)
                for adapter in document.adapters:
                    for name in _files_in(adapter.path):
                        _add_bytes(archive, f"adapters/{adapter.key}/{name}", (adapter.path / name).read_bytes())
            os.replace(temp, file)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return file

    @_clear_errors
    def import_archive(self, file: Path | str) -> DocumentEntry:
        """Add a document exported by :meth:`export`: its text, row and adapters, all or nothing.

        Every file is checked against the checksums in the archive, and an archive whose member names would
        write outside its own folders (absolute paths, ``..``, links, devices) is refused before anything is
        written into the memory.
        """
        file = Path(file)
        with self.staging() as unpacked:
            _unpack_safely(file, unpacked)
            try:
                index = _read_json(unpacked / ARCHIVE_INDEX)
                document = index["document"]
                doc_id = document["doc_id"]
                keys = list(index["adapters"])
                text = (unpacked / ARCHIVE_TEXT).read_text(encoding="utf-8")
                text_sha256 = index["text_sha256"]
            except (KeyError, TypeError, ValueError, UnicodeDecodeError, FileNotFoundError) as err:
                raise InputError(f"{file} is not a lift memory archive ({err!r}): export it again with `lift export`") from None
            if hashlib.sha256(text.encode("utf-8")).hexdigest() != text_sha256:
                raise InputError(f"{file} is damaged: the document text does not match its checksum; export it again")
            _check_doc_id(doc_id)
            staged = []
            for key in keys:
                folder = unpacked / "adapters" / str(key)
                where = f"{file}:adapters/{key}"
                problem = _checksum_problem(folder)
                if problem is not None:
                    raise CorruptAdapterError(f"the adapter {where} in the archive is damaged ({problem}): export it again")
                item = self._prepare(folder)
                if item.key != key or item.manifest["doc_id"] != doc_id:
                    raise CorruptAdapterError(f"the adapter {where} does not belong to this document: export it again")
                staged.append(item)
            row = {name: document[name] for name in ("doc_id", "title", "tokens", "route", "created")}
            self._commit(row, text, staged)
        return self.resolve(doc_id)

    # ---- rows

    def _document(self, conn: sqlite3.Connection, doc_id: str) -> DocumentEntry | None:
        row = conn.execute("SELECT * FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        document = self._document_from_row(row)
        rows = conn.execute(_ADAPTER_QUERY + " WHERE a.doc_id = ? ORDER BY a.rowid", (doc_id,))
        document.adapters = [self._adapter_from_row(adapter) for adapter in rows]
        return document

    def _adapter_entry(self, key: str) -> AdapterEntry:
        with self._connect() as conn:
            row = conn.execute(_ADAPTER_QUERY + " WHERE a.key = ?", (key,)).fetchone()
        if row is None:  # removed by another process right after we added it
            raise UnknownDocumentError(f"adapter {key} was removed while it was being added: absorb the document again")
        return self._adapter_from_row(row)

    @staticmethod
    def _document_from_row(row: sqlite3.Row) -> DocumentEntry:
        return DocumentEntry(doc_id=row["doc_id"], title=row["title"], tokens=row["tokens"], created=row["created"], route=row["route"])

    def _adapter_from_row(self, row: sqlite3.Row) -> AdapterEntry:
        return AdapterEntry(
            key=row["key"],
            doc_id=row["doc_id"],
            title=row["title"],
            tokens=row["tokens"],
            base_model=row["base_model"],
            base_fingerprint=row["base_fingerprint"],
            settings_fingerprint=row["settings_fingerprint"],
            created=row["created"],
            size_bytes=row["size_bytes"],
            train_seconds=row["train_seconds"],
            path=self.adapter_path(row["key"]),
            manifest=json.loads(row["manifest"]),
        )


_ADAPTER_QUERY = "SELECT a.*, d.title, d.tokens FROM adapters a JOIN documents d ON d.doc_id = a.doc_id"


def _check_doc_id(doc_id: str) -> None:
    # Ids become file names: anything but a sha256 hex digest is refused (it could name a path elsewhere).
    if not isinstance(doc_id, str) or not _DOC_ID.fullmatch(doc_id):
        raise InputError(f"{doc_id!r} is not a document id (a sha256 hex digest of the document's text)")


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(time.time())
    archive.addfile(info, io.BytesIO(data))


def _unpack_safely(file: Path, target: Path) -> None:
    """Unpack an exported archive into ``target``, refusing any member that is not a plain file at an
    expected place (the index, the text, ``adapters/<key>/<file>``)."""
    allowed = re.compile(r"(lift-memory\.json|document\.txt|adapters/[0-9a-f]{24}/[A-Za-z0-9_.-]+)")
    try:
        with tarfile.open(file, "r:gz") as archive:
            for member in archive:
                name = member.name
                if not member.isfile() or not allowed.fullmatch(name) or ".." in name.split("/"):
                    raise InputError(
                        f"{file} is not a safe lift memory archive: it holds {name!r} "
                        f"({'not a plain file' if not member.isfile() else 'an unexpected path'}); refusing to import it"
                    )
                destination = target / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                with open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise InputError(f"{file} is not a readable lift memory archive ({err}): export it again with `lift export`") from None
    except FileNotFoundError:
        raise InputError(f"archive not found: {file}") from None
