"""How changes reach the registry so that a crash at any point leaves nothing half-done.

- Adds write files first and the index last: an adapter is saved into a staging folder, checked
  (:func:`prepare`), renamed into ``adapters/`` and only then given its index row (:func:`commit`). A document's
  text file is written before its row, under a mark in ``adding/`` that lasts until the row is written.
- Removals change the index first and the files after (:func:`remove_document`), under a mark in ``forgetting/``;
  an adapter folder leaves ``adapters/`` in one rename (``Layout.discard``).

Either way a crash leaves at worst a folder or a text file that no row mentions, with the mark that says what to
do with it: repair keeps an adapter folder that explains itself (the add is finished), removes a text whose add
died before its row (the add is undone), and finishes a forget. Never a row that points at nothing. Every change
holds ``registry.lock``, so the index and the folders change together even when several processes share one home.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lift_tool.errors import CorruptAdapterError, InputError
from lift_tool.files import write_atomic
from lift_tool.memory.manifest import Manifest
from lift_tool.memory.registry import index
from lift_tool.memory.registry.entries import SHORT_ID, DocumentEntry, adapter_key
from lift_tool.memory.registry.integrity import check_peft_files, checksum_problem, folder_size, write_checksums
from lift_tool.memory.registry.layout import Layout, check_doc_id, check_title


@dataclass
class Staged:
    """An adapter folder checked and ready to be renamed into adapters/."""

    folder: Path
    key: str
    manifest: Manifest


# ------------------------------------------------------------------------------------------ documents


def add_document(
    layout: Layout, doc_id: str, title: str | None, text: str | None, tokens: int | None, route: str | None
) -> DocumentEntry:
    """Store a document's text and its row, or replace the title and route of a known one (``None`` keeps)."""
    check_doc_id(doc_id)
    if title is not None:
        check_title(title)
    with layout.writing(), layout.connect() as conn:
        with storing_text(layout, doc_id, text), index.transaction(conn):
            known = index.has_document(conn, doc_id)
            if not known and (title is None or text is None or tokens is None):
                raise InputError(f"document {doc_id[:SHORT_ID]} is new: give its title, text and token count")
            if known:
                index.update_document(conn, doc_id, title, route)
            else:
                index.insert_document(conn, {"doc_id": doc_id, "title": title, "tokens": tokens, "route": route})
        return index.document(conn, doc_id, layout.adapters_dir)


def remove_document(layout: Layout, doc_id: str) -> None:
    """Forget a document: its row and its adapters' rows in one transaction, then their folders and its text.

    A mark in forgetting/ lasts from before the rows go until the files are gone, so that repair finishes a forget
    that died half-way instead of rebuilding the document from the files it left."""
    with layout.writing():
        mark = layout.forgetting_dir / doc_id
        write_atomic(mark, b"")
        with layout.connect() as conn, index.transaction(conn):
            keys = index.delete_document(conn, doc_id)
        for key in keys:
            layout.discard(layout.adapter_path(key))
        layout.text_path(doc_id).unlink(missing_ok=True)
        shutil.rmtree(layout.unfinished_path(doc_id), ignore_errors=True)
        mark.unlink(missing_ok=True)


@contextmanager
def storing_text(layout: Layout, doc_id: str, text: str | None) -> Iterator[None]:
    """Store a document's text, if given and not stored yet, for the row written inside the block (the caller holds
    registry.lock). A mark in adding/ lasts until the block ends: an add killed before its row leaves the mark
    beside the text, and repair removes both (or keeps the text, if the document's adapter came through whole). A
    block that fails removes the text it wrote."""
    path = layout.text_path(doc_id)
    if text is None or path.is_file():
        yield
        return
    mark = layout.adding_dir / doc_id
    write_atomic(mark, b"")
    try:
        write_atomic(path, text.encode("utf-8"))
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        mark.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- adapters


@contextmanager
def inside_staging(layout: Layout, folder: Path) -> Iterator[Path]:
    """The folder itself if it lies in staging/, else a copy there (renames only work within a filesystem,
    and a caller's own folder is not ours to change)."""
    if folder.is_dir() and layout.staging_dir.resolve() not in folder.resolve().parents:
        with layout.staging_folder() as copy:
            shutil.copytree(folder, copy, dirs_exist_ok=True)
            yield copy
    else:
        yield folder


def prepare(folder: Path, where: str | None = None) -> Staged:
    """Check a staged adapter folder and write its checksums.json (outside the lock: it reads every byte).
    ``where`` names the folder in messages (default: its path)."""
    where = where or str(folder)
    if not folder.is_dir():
        raise CorruptAdapterError(f"the staged adapter folder {folder} does not exist (was the memory folder removed?)")
    manifest = Manifest.read(folder, where)
    check_peft_files(folder, where)
    write_checksums(folder)
    key = adapter_key(manifest.doc_id, manifest.base_fingerprint, manifest.settings_fingerprint)
    return Staged(folder=folder, key=key, manifest=manifest)


def commit(layout: Layout, document: dict[str, Any], text: str | None, staged: list[Staged]) -> None:
    """Rename staged adapter folders (in staging/) into adapters/ and insert their rows, all or nothing.

    ``document`` is the row to create if the document is unknown (title, tokens, route).
    """
    with layout.writing():
        _commit_locked(layout, document, text, staged)
    for item in staged:  # what is still there duplicated an adapter stored already
        shutil.rmtree(item.folder, ignore_errors=True)


def _commit_locked(layout: Layout, document: dict[str, Any], text: str | None, staged: list[Staged]) -> None:
    with storing_text(layout, document["doc_id"], text):
        _commit_adapters(layout, document, staged)


def _commit_adapters(layout: Layout, document: dict[str, Any], staged: list[Staged]) -> None:
    doc_id = document["doc_id"]
    if not layout.text_path(doc_id).is_file():
        raise InputError(
            f"the text of document {doc_id[:SHORT_ID]} is not stored: call add_document() before add_adapter(), "
            "or pass the text"
        )
    moved: list[tuple[Path, Path]] = []  # (stored folder, where it came from), to undo on failure
    displaced: list[tuple[Path, Path]] = []  # (damaged copy moved aside, where it was)
    try:
        rows = []
        for item in staged:
            target = layout.adapter_path(item.key)
            if target.is_dir():
                if checksum_problem(target) is None:
                    # The same content is stored already: keep it (and its manifest), restore its row if lost.
                    rows.append((item.key, Manifest.read(target)))
                    continue
                aside = layout.new_staging_path()
                os.rename(target, aside)  # a damaged copy under the same key: replace it
                displaced.append((aside, target))
            os.rename(item.folder, target)
            moved.append((target, item.folder))
            rows.append((item.key, item.manifest))
        with layout.connect() as conn, index.transaction(conn):
            index.insert_rows(conn, document, [(key, manifest, folder_size(layout.adapter_path(key))) for key, manifest in rows])
    except BaseException:
        # Undo in reverse: nothing under adapters/ may be left without its row.
        for target, origin in reversed(moved):
            try:
                os.rename(target, origin)
            except OSError:
                layout.discard(target)
        for aside, target in reversed(displaced):
            try:
                os.rename(aside, target)
            except OSError:
                pass
        raise
    for aside, _ in displaced:
        shutil.rmtree(aside, ignore_errors=True)
