"""Checking that the index and the folders agree, and removing what interrupted or damaged operations left.

``verify`` hashes every adapter's files; ``gc`` only compares the index with the folders. Both hold
registry.lock while they look, so no add or remove is half-way. Repairs drop rows first and files after, like
every removal (see ``commit``); intact committed adapters are never touched.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lift_tool.files import pid_alive
from lift_tool.memory.registry import index
from lift_tool.memory.registry.entries import SHORT_ID
from lift_tool.memory.registry.integrity import checksum_problem
from lift_tool.memory.registry.layout import Layout

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


def check(layout: Layout, hash_files: bool, repair: bool) -> VerifyReport:
    """Compare the index with the folders (and with ``hash_files``, every adapter with its checksums); with
    ``repair``, remove what is damaged or orphaned."""
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
                problem = checksum_problem(folder)
                if problem is not None:
                    report.damaged[key] = problem
        report.orphan_folders = sorted(p.name for p in layout.adapters_dir.iterdir() if p.name not in adapter_rows)
        report.missing_texts = sorted(doc_id for doc_id in doc_ids if not layout.text_path(doc_id).is_file())
        report.orphan_texts = sorted(
            p.name for p in layout.documents_dir.iterdir() if not (p.suffix == ".txt" and p.stem in doc_ids)
        )
        report.stale_staging = sorted(p.name for p in layout.staging_dir.iterdir() if is_stale(p))
        if repair:
            _repair(layout, report)
    return report


def _repair(layout: Layout, report: VerifyReport) -> None:
    dropped = report.missing_folders + list(report.damaged)
    if dropped:
        with layout.connect() as conn, index.transaction(conn):
            index.delete_adapters(conn, dropped)
        report.repaired += [f"dropped the row of adapter {key} (its folder is missing)" for key in report.missing_folders]
        report.repaired += [f"removed damaged adapter {key} ({problem})" for key, problem in report.damaged.items()]
    for key in report.damaged:  # rows first (above), then files
        shutil.rmtree(layout.adapter_path(key), ignore_errors=True)
    for name in report.orphan_folders:
        _remove_path(layout.adapters_dir / name)
        report.repaired.append(f"removed adapters/{name} (no index row)")
    for name in report.orphan_texts:
        _remove_path(layout.documents_dir / name)
        report.repaired.append(f"removed documents/{name} (no index row)")
    for name in report.stale_staging:
        _remove_path(layout.staging_dir / name)
        report.repaired.append(f"removed staging/{name} (interrupted add)")
    if report.missing_texts:
        report.repaired.append(
            f"left {len(report.missing_texts)} document(s) without text as they are: add them again to restore it"
        )


def is_stale(path: Path) -> bool:
    """A staging entry is garbage when its owner process is dead, or when nobody touched it for a long time:
    an hour for folders without a known owner, a day for a living owner (a long absorption, or a reused pid)."""
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


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
