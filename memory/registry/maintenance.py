"""Checking that the index and the folders agree, rebuilding what the folders can explain, and removing what
interrupted or damaged operations left.

``verify`` hashes every adapter's files; ``gc`` only compares the index with the folders. Both hold
registry.lock while they look, so no add or remove is half-way. Repair rebuilds the index rows of an adapter
folder that no row mentions when the folder explains itself (a valid manifest, its name the key the manifest gives,
files that match their checksums, and its document's text stored under the id it names): that is what a lost or
replaced index leaves (or an add killed between its rename and its row). It settles what killed operations left by
their marks: a forget is finished, an add whose row was never written is undone (its text goes), and temporary
files of interrupted writes go. What it cannot explain it keeps and reports, unless asked to ``prune``. Removals
drop rows first and files after, like every removal (see ``commit``); intact committed adapters are never touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lift_tool.errors import CorruptAdapterError
from lift_tool.files import is_partial_write, lock_is_held, pid_alive, sha256_file
from lift_tool.memory.manifest import Manifest
from lift_tool.memory.registry import index
from lift_tool.memory.registry.entries import SHORT_ID, adapter_key
from lift_tool.memory.registry.integrity import checksum_problem, folder_size, weights_problem
from lift_tool.memory.registry.layout import Layout, staging_lock

STALE_STAGING_S = 3600.0  # a staging folder untouched for this long is garbage, whoever owns it


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
    partial_writes: list[str] = field(default_factory=list)  # temporary files of interrupted writes (folder/name)
    unfinished_forgets: list[str] = field(default_factory=list)  # documents whose forget was interrupted
    unfinished_adds: list[str] = field(default_factory=list)  # documents whose text was stored before their row
    # Filled by whoever also checks the retrieval store against the index (``Lift.verify``):
    unindexed: list[str] = field(default_factory=list)  # known documents with no chunks in the store
    stale_chunks: list[str] = field(default_factory=list)  # documents with chunks that the index does not know
    repaired: list[str] = field(default_factory=list)  # one line per action taken
    left: list[str] = field(default_factory=list)  # what repair kept because it could not explain it (see prune)

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
            or self.partial_writes
            or self.unfinished_forgets
            or self.unfinished_adds
            or self.unindexed
            or self.stale_chunks
        )

    def problems(self) -> list[str]:
        """One readable line per problem found (what ``lift verify`` prints)."""
        lines = [f"adapter {key}: {problem}" for key, problem in self.damaged.items()]
        lines += [f"adapter {key}: its folder is missing" for key in self.missing_folders]
        lines += [f"adapters/{name}: a folder that no index row mentions" for name in self.orphan_folders]
        lines += [f"document {doc_id[:SHORT_ID]}: its text file is missing" for doc_id in self.missing_texts]
        lines += [f"documents/{name}: a text file that no index row mentions" for name in self.orphan_texts]
        lines += [f"staging/{name}: left over from an interrupted add" for name in self.stale_staging]
        lines += [f"{name}: left over from an interrupted write" for name in self.partial_writes]
        lines += [f"document {doc_id[:SHORT_ID]}: its forget was interrupted" for doc_id in self.unfinished_forgets]
        lines += [f"document {doc_id[:SHORT_ID]}: its add was interrupted" for doc_id in self.unfinished_adds]
        lines += [f"document {doc_id[:SHORT_ID]}: not indexed for retrieval" for doc_id in self.unindexed]
        lines += [f"retrieval chunks of document {doc_id[:SHORT_ID]}, which the index does not know"
                  for doc_id in self.stale_chunks]
        return lines


def check(layout: Layout, hash_files: bool, repair: bool, prune: bool = False) -> VerifyReport:
    """Compare the index with the folders (and with ``hash_files``, every adapter with its checksums). With
    ``repair``: rebuild the rows of orphan adapter folders that explain themselves, remove damaged adapters and
    stale staging folders; orphans it cannot explain are kept and listed in ``left``, or removed with ``prune``."""
    report = VerifyReport()
    with layout.writing():  # a consistent view: no add or remove is half-way while we look
        with layout.connect() as conn:
            adapter_rows = index.adapter_keys(conn)
            doc_ids = index.document_ids(conn)
        for key in sorted(adapter_rows):
            folder = layout.adapter_path(key)
            if not folder.is_dir():
                report.missing_folders.append(key)
            elif hash_files:
                report.checked += 1
                problem = checksum_problem(folder) or weights_problem(folder)
                if problem is not None:
                    report.damaged[key] = problem
        report.orphan_folders = sorted(p.name for p in layout.adapters_dir.iterdir() if p.name not in adapter_rows)
        report.missing_texts = sorted(doc_id for doc_id in doc_ids if not layout.text_path(doc_id).is_file())
        texts, forgets, adds = (_listing(report, folder)
                                for folder in (layout.documents_dir, layout.forgetting_dir, layout.adding_dir))
        report.orphan_texts = [name for name in texts if not (name.endswith(".txt") and name[:-4] in doc_ids)]
        report.stale_staging = sorted(p.name for p in layout.staging_dir.iterdir() if is_stale(p))
        report.unfinished_forgets, report.unfinished_adds = forgets, adds
        if repair:
            _repair(layout, report, prune, _rebuild(layout, report), doc_ids)
    return report


def _listing(report: VerifyReport, folder: Path) -> list[str]:
    """The names in ``folder``, sorted, but for the temporary files of interrupted writes: those are added to the
    report's ``partial_writes`` (no writer is half-way while registry.lock is held)."""
    names = sorted(p.name for p in folder.iterdir())
    report.partial_writes += [f"{folder.name}/{name}" for name in names if is_partial_write(name)]
    return [name for name in names if not is_partial_write(name)]


def explain_adapter(layout: Layout, name: str) -> Manifest | str:
    """The manifest of an adapter folder that no index row mentions, if the folder explains itself; else why not."""
    folder = layout.adapters_dir / name
    try:
        manifest = Manifest.read(folder, f"adapters/{name}")
    except CorruptAdapterError as err:
        return str(err)
    if adapter_key(manifest.doc_id, manifest.base_fingerprint, manifest.settings_fingerprint) != name:
        return "its name is not the key its manifest gives"
    problem = checksum_problem(folder)
    if problem is not None:
        return problem
    text = layout.text_path(manifest.doc_id)
    if not text.is_file():
        return f"the text of its document {manifest.doc_id[:SHORT_ID]} is not stored"
    if sha256_file(text) != manifest.doc_id:
        return f"the stored text of its document {manifest.doc_id[:SHORT_ID]} does not match the document's id"
    return manifest


def _rebuild(layout: Layout, report: VerifyReport) -> dict[str, Manifest | str]:
    """Index rows for the orphan adapter folders that explain themselves, with their documents' rows. Returns, for
    every orphan folder, its manifest (rebuilt) or why it could not be rebuilt."""
    explained = {name: explain_adapter(layout, name) for name in report.orphan_folders}
    forgotten = set(report.unfinished_forgets)
    for name, found in explained.items():
        if isinstance(found, Manifest) and found.doc_id in forgotten:
            explained[name] = "its document was being forgotten"
    rebuilt = {name: manifest for name, manifest in explained.items() if isinstance(manifest, Manifest)}
    if rebuilt:
        with layout.connect() as conn, index.transaction(conn):
            for name, manifest in rebuilt.items():
                document = {"doc_id": manifest.doc_id, "title": manifest.title, "tokens": manifest.tokens,
                            "route": "absorb", "created": manifest.created}
                index.insert_rows(conn, document, [(name, manifest, folder_size(layout.adapters_dir / name))])
        report.repaired += [f"rebuilt the index rows of adapter {name} and of its document {manifest.title!r} "
                            "from its manifest" for name, manifest in rebuilt.items()]
    return explained


def _repair(layout: Layout, report: VerifyReport, prune: bool, explained: dict[str, Manifest | str],
            doc_ids: set[str]) -> None:
    rebuilt = {found.doc_id for found in explained.values() if isinstance(found, Manifest)}
    rebuilt_texts = {f"{doc_id}.txt" for doc_id in rebuilt}
    for name in report.partial_writes:
        layout.discard(layout.home / name)
        report.repaired.append(f"removed {name} (interrupted write)")
    _finish_forgets(layout, report, doc_ids)
    _finish_adds(layout, report, doc_ids | rebuilt)
    dropped = report.missing_folders + list(report.damaged)
    if dropped:
        with layout.connect() as conn, index.transaction(conn):
            index.delete_adapters(conn, dropped)
        report.repaired += [f"dropped the row of adapter {key} (its folder is missing)" for key in report.missing_folders]
        report.repaired += [f"removed damaged adapter {key} ({problem})" for key, problem in report.damaged.items()]
    for key in report.damaged:  # rows first (above), then files
        layout.discard(layout.adapter_path(key))
    for name in report.orphan_folders:
        if not isinstance(explained[name], Manifest):  # the rebuilt ones have their rows back
            _prune_or_keep(layout, report, layout.adapters_dir / name, prune,
                           f"no index row, and it cannot be rebuilt ({explained[name]})")
    for name in report.orphan_texts:
        if name not in rebuilt_texts:
            _prune_or_keep(layout, report, layout.documents_dir / name, prune,
                           "no index row and no adapter that names its document")
    for name in report.stale_staging:
        layout.discard(layout.staging_dir / name)
        report.repaired.append(f"removed staging/{name} (interrupted add)")
    report.left += [f"kept document {doc_id[:SHORT_ID]} without its text: add the document again to restore it"
                    for doc_id in report.missing_texts]


def _prune_or_keep(layout: Layout, report: VerifyReport, path: Path, prune: bool, why_kept: str) -> None:
    """Remove something repair cannot explain when asked to prune; else keep it and say why."""
    shown = f"{path.parent.name}/{path.name}"
    if prune:
        layout.discard(path)
        report.repaired.append(f"removed {shown} (no index row)")
    else:
        report.left.append(f"kept {shown}: {why_kept}")


def _finish_forgets(layout: Layout, report: VerifyReport, doc_ids: set[str]) -> None:
    """Finish each interrupted forget whose rows are gone (``doc_ids``: the documents with a row, read under the
    same lock; repair never rebuilds a document being forgotten): its adapter folders and its text go too. A mark
    whose document still has its row is a forget that never began: the mark goes, the document stays."""
    for doc_id in report.unfinished_forgets:
        if doc_id not in doc_ids:
            for name in list(report.orphan_folders):
                try:
                    owner = Manifest.read(layout.adapters_dir / name).doc_id
                except CorruptAdapterError:
                    continue
                if owner == doc_id:
                    layout.discard(layout.adapters_dir / name)
                    report.orphan_folders.remove(name)
            if f"{doc_id}.txt" in report.orphan_texts:
                layout.discard(layout.text_path(doc_id))
                report.orphan_texts.remove(f"{doc_id}.txt")
            report.repaired.append(f"finished forgetting document {doc_id[:SHORT_ID]} (its forget was interrupted)")
        else:
            report.repaired.append(f"document {doc_id[:SHORT_ID]}: its forget never began; it stays")
        (layout.forgetting_dir / doc_id).unlink(missing_ok=True)


def _finish_adds(layout: Layout, report: VerifyReport, stored: set[str]) -> None:
    """Settle each add that died after storing its document's text: done if the document has its row now (``stored``:
    written, or rebuilt from an adapter that came through whole), else undone: its text goes."""
    for doc_id in report.unfinished_adds:
        if doc_id in stored:
            report.repaired.append(f"document {doc_id[:SHORT_ID]}: its interrupted add had come through; it stays")
        else:
            if f"{doc_id}.txt" in report.orphan_texts:
                layout.discard(layout.text_path(doc_id))
                report.orphan_texts.remove(f"{doc_id}.txt")
            report.repaired.append(f"undid the interrupted add of document {doc_id[:SHORT_ID]} (its text went before "
                                   "its row was written)")
        (layout.adding_dir / doc_id).unlink(missing_ok=True)


def is_stale(path: Path) -> bool:
    """A staging entry is garbage unless its owner lives. A living owner holds the entry's lock file
    (``staging_lock``), which any process sharing the folder sees, whatever its PID namespace or host; a lock file
    nobody holds is garbage. A folder whose lock nobody holds is judged by the pid in its name, which only this PID
    namespace can see: garbage when that process is gone, or when nobody touched it for a long time (an hour
    without a known owner, a day for a living one: a reused pid)."""
    if lock_is_held(path if path.suffix == ".lock" else staging_lock(path)):
        return False
    if path.suffix == ".lock":  # its owner held it as long as it lived
        return True
    owner = path.name.split("-", 1)[0]
    if owner.isdigit() and not pid_alive(int(owner)):
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
