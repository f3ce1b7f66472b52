"""The ``Registry`` class: the registry's public operations, each a short composition of the package's modules,
and the one place that turns raw sqlite3/OS failures into a :class:`StorageError` that says what to do."""

from __future__ import annotations

import functools
import sqlite3
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from lift_tool.errors import (
    AmbiguousDocumentError,
    CorruptAdapterError,
    IncompatibleAdapterError,
    LiftError,
    StorageError,
    UnknownDocumentError,
)
from lift_tool.files import holding_lock, write_problem
from lift_tool.memory.registry import archives, commit, index, maintenance
from lift_tool.memory.registry.entries import SHORT_ID, AdapterEntry, DocumentEntry
from lift_tool.memory.registry.integrity import WEIGHTS_FILE, checksum_problem
from lift_tool.memory.registry.layout import Layout, absorbing_lock, check_doc_id
from lift_tool.memory.registry.maintenance import VerifyReport


def _storage_message(home: Path, err: BaseException) -> str:
    if isinstance(err, TimeoutError):  # filelock.Timeout
        return f"another lift process has been writing to {home} for too long: wait for it to finish, then try again"
    if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
        return f"the memory index in {home} stayed locked by another lift process: try again when it has finished"
    problem = write_problem(home, err)  # a full, read-only or forbidden disk, whatever the error calls it
    if problem is not None:
        return problem
    if isinstance(err, sqlite3.DatabaseError) and ("not a database" in str(err) or "malformed" in str(err)):
        return f"the memory index {home / 'registry.sqlite'} is damaged ({err}): move it away and run `lift verify --repair`"
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


class Registry(Layout):
    """The index of documents and adapters under one home directory (its layout: :class:`Layout`).

    Safe to use from several threads and processes at once. Every call opens its own SQLite connection, so a
    Registry object can be shared between threads, and a home directory deleted under a running process is
    recreated (empty) by the next call instead of writes going to a deleted file.
    """

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
        return commit.add_document(self, doc_id, title, text, tokens, route)

    @_clear_errors
    def document_text(self, doc_id: str) -> str:
        """The stored normalised text of a document."""
        check_doc_id(doc_id)
        try:
            return self.text_path(doc_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            pass
        with self.connect() as conn:
            known = index.has_document(conn, doc_id)
        if not known:
            raise UnknownDocumentError(f"document {doc_id[:SHORT_ID]} was forgotten meanwhile (by another lift process "
                                       "or thread): add it again to use it")
        raise UnknownDocumentError(f"the text of document {doc_id[:SHORT_ID]} is not stored: add the document again "
                                   "(`lift verify` lists what is missing)")

    @_clear_errors
    def get_document(self, doc_id: str) -> DocumentEntry | None:
        """The document with exactly this id, or None."""
        with self.connect() as conn:
            return index.document(conn, doc_id, self.adapters_dir)

    @_clear_errors
    def list_documents(self) -> list[DocumentEntry]:
        """Every known document, oldest first, with its adapters (what `lift list` prints)."""
        with self.connect() as conn:
            return index.list_documents(conn, self.adapters_dir)

    @_clear_errors
    def resolve(self, ref: str) -> DocumentEntry:
        """Find a document by full id, by an unambiguous id prefix (at least 4 characters) or by exact title.

        A reference that names several documents is ambiguous: a title shared by several, a prefix shared by several
        ids, or a title that is also the beginning of another document's id.
        """
        try:
            ref.encode("utf-8")  # what is not valid Unicode (a lone surrogate) names no document
        except UnicodeEncodeError:
            candidates = []
        else:
            with self.connect() as conn:
                candidates = index.find_documents(conn, ref, self.adapters_dir)
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

        Save the adapter and its manifest into it, then call :meth:`add_adapter` inside the block. Repair leaves it
        alone while this process lives, seen from any process that shares the folder (``Layout.staging_folder``).
        """
        held = ExitStack()
        try:
            folder = held.enter_context(self.staging_folder())
        except (OSError, TimeoutError) as err:
            raise StorageError(_storage_message(self.home, err)) from err
        with held:
            try:
                yield folder
            except LiftError:
                raise
            except Exception as err:  # what the caller writes here fails on a full or read-only disk: say so
                problem = write_problem(self.home, err, ask_filesystem=False)
                if problem is None:
                    raise
                raise StorageError(problem) from err

    @contextmanager
    def absorbing(self, doc_id: str) -> Iterator[None]:
        """Hold the lock of one document's absorption while the block runs, waiting for another process (or thread)
        that holds it: a second absorption of the same document waits for the first to store its adapter, then
        finds it (:meth:`find_adapter`) instead of training again. A process that dies releases it at once."""
        check_doc_id(doc_id)
        held = ExitStack()
        try:
            self.ensure()
            held.enter_context(holding_lock(absorbing_lock(self.staging_dir, doc_id)))
        except OSError as err:
            raise StorageError(_storage_message(self.home, err)) from err
        with held:
            yield

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
        with commit.inside_staging(self, Path(staged_folder)) as folder:
            staged = commit.prepare(folder)
            manifest = staged.manifest
            document = {"doc_id": manifest.doc_id, "title": manifest.title, "tokens": manifest.tokens, "route": "absorb"}
            commit.commit(self, document, text, [staged])
        with self.connect() as conn:
            entry = index.adapter(conn, staged.key, self.adapters_dir)
        if entry is None:  # removed by another process right after we added it
            raise UnknownDocumentError(f"adapter {staged.key} was removed while it was being added: absorb the document again")
        return entry

    @_clear_errors
    def find_adapter(self, doc_id: str, base_fingerprint: str, settings_fingerprint: str | None = None) -> AdapterEntry | None:
        """The cache lookup: the stored adapter for this document, base model and settings (with settings
        ``None``: the newest one for this document and base model), or None."""
        with self.connect() as conn:
            entries = index.find_adapters(conn, doc_id, base_fingerprint, settings_fingerprint, self.adapters_dir)
        for entry in entries:
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
        self._check(entry)

    @_clear_errors
    def read_intact(self, entry: AdapterEntry, name: str = WEIGHTS_FILE) -> bytes:
        """Check all of an adapter's files like :meth:`check_intact` and return the bytes of one of them, read
        once: what the caller loads is exactly what was checked."""
        keep = {name: b""}
        self._check(entry, keep)
        return keep[name]

    def _check(self, entry: AdapterEntry, keep: dict[str, bytes] | None = None) -> None:
        """Raise CorruptAdapterError if the adapter's files do not match their checksums, unless they are gone
        because its document was forgotten (or the adapter removed) meanwhile: that is no damage, and said so."""
        try:
            problem = checksum_problem(entry.path, keep)
        except FileNotFoundError:
            problem = "a file vanished while it was read"
        if problem is None:
            return
        with self.connect() as conn:
            document = index.document(conn, entry.doc_id, self.adapters_dir)
        if document is None:
            raise UnknownDocumentError(f"'{entry.title}' was forgotten meanwhile (by another lift process or thread): "
                                       "absorb it again to use it")
        if all(adapter.key != entry.key for adapter in document.adapters):
            raise UnknownDocumentError(f"the adapter of '{entry.title}' was removed meanwhile (by `lift verify "
                                       "--repair` or another lift process): absorb the document again to use it")
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
        commit.remove_document(self, document.doc_id)
        return document

    @_clear_errors
    def verify(self, repair: bool = False, prune: bool = False) -> VerifyReport:
        """Check that the index and the folders agree and that every adapter's files match their checksums.

        With ``repair``: rebuild the index rows of adapter folders that explain themselves (manifest, key,
        checksums, their document's text), remove damaged adapters (row and folder; the document stays, absorb it
        again), plus what :meth:`gc` removes. Folders and texts it cannot explain are kept and listed in the
        report's ``left``; ``prune`` removes them. Intact committed adapters are never touched.
        """
        return maintenance.check(self, hash_files=True, repair=repair, prune=prune)

    @_clear_errors
    def gc(self, prune: bool = False) -> VerifyReport:
        """Put right what interrupted operations left behind: rebuild the rows of adapter folders that explain
        themselves, drop rows whose folder is gone, remove stale staging folders; folders and text files no row
        mentions are removed only with ``prune``. Does not hash committed adapters (see :meth:`verify`)."""
        return maintenance.check(self, hash_files=False, repair=True, prune=prune)

    # ---- export and import

    @_clear_errors
    def export(self, ref: str, file: Path | str) -> Path:
        """Write one document's memory (text, row, adapters with manifests and checksums) as a tar.gz archive.

        Damaged adapters are refused rather than exported. The archive appears complete or not at all.
        """
        document = self.resolve(ref)
        for adapter in document.adapters:
            self.check_intact(adapter)
        return archives.write_archive(document, self.document_text(document.doc_id), Path(file))

    @_clear_errors
    def import_archive(self, file: Path | str, max_bytes: int = archives.ARCHIVE_MAX_BYTES,
                       max_files: int = archives.ARCHIVE_MAX_FILES) -> DocumentEntry:
        """Add a document exported by :meth:`export`: its text, row and adapters, all or nothing.

        Every file is checked against the checksums in the archive, and an archive whose member names would
        write outside its own folders (absolute paths, ``..``, links, devices), or that holds more than ``max_files``
        files or unpacks to more than ``max_bytes`` (or to many times its own size), is refused before anything is
        written into the memory.
        """
        with self.staging() as unpacked:
            row, text, staged = archives.read_archive(Path(file), unpacked, max_bytes, max_files)
            commit.commit(self, row, text, staged)
        return self.resolve(row["doc_id"])
