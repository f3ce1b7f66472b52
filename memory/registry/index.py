"""The SQLite index: its schema, connections, the one transaction helper, and every query the registry runs.

Connections are in autocommit mode and every transaction is opened by :func:`transaction`. The index runs in WAL
mode, so readers never wait for a writer, and concurrent writers wait for each other (``BUSY_TIMEOUT_S``) rather
than fail.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from lift_tool.memory.manifest import Manifest
from lift_tool.memory.registry.entries import AdapterEntry, DocumentEntry

SCHEMA_VERSION = 2  # 2: documents indexed by title (a registry of version 1 gets the index when opened)
BUSY_TIMEOUT_S = 60.0  # how long a process waits for another one's write transaction before giving up
MIN_PREFIX = 4  # shortest id prefix that resolve() accepts

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
CREATE INDEX IF NOT EXISTS documents_by_title ON documents (title);
"""

_ADAPTER_QUERY = "SELECT a.*, d.title, d.tokens FROM adapters a JOIN documents d ON d.doc_id = a.doc_id"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------- connections


@contextmanager
def connect(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode, with the schema in place; callers open transactions with
    :func:`transaction`."""
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        _use_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")  # in WAL mode a crash may lose the last commit, never corrupt
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            _create_schema(conn)
        yield conn
    finally:
        conn.close()


def _use_wal(conn: sqlite3.Connection) -> None:
    """WAL lets readers run while a writer commits. It is stored in the file, so only a new file needs it; there,
    processes that open it at once can get "database is locked" at once, without SQLite's busy wait: wait here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """One transaction: committed when the block ends, rolled back on any exception (Ctrl-C included).

    ``immediate`` takes the write lock at the start, so a writer never fails half-way upgrading a read lock;
    without it the block is a read snapshot (several queries that see the same state).
    """
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _create_schema(conn: sqlite3.Connection) -> None:
    # Several processes may get here at once on a new file: IF NOT EXISTS makes the later ones no-ops.
    with transaction(conn):
        for statement in _SCHEMA.strip().split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


# ---------------------------------------------------------------------------------------- reading


def document(conn: sqlite3.Connection, doc_id: str, adapters_dir: Path) -> DocumentEntry | None:
    """The document with exactly this id, with its adapters (oldest first), or None."""
    row = conn.execute("SELECT * FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
    if row is None:
        return None
    entry = _document_from_row(row)
    rows = conn.execute(_ADAPTER_QUERY + " WHERE a.doc_id = ? ORDER BY a.rowid", (doc_id,))
    entry.adapters = [_adapter_from_row(adapter, adapters_dir) for adapter in rows]
    return entry


def list_documents(conn: sqlite3.Connection, adapters_dir: Path) -> list[DocumentEntry]:
    """Every document, oldest first, with its adapters."""
    with transaction(conn, immediate=False):  # one snapshot for both queries
        documents = [_document_from_row(row) for row in conn.execute("SELECT * FROM documents ORDER BY created, rowid")]
        by_id = {entry.doc_id: entry for entry in documents}
        for row in conn.execute(_ADAPTER_QUERY + " ORDER BY a.rowid"):
            by_id[row["doc_id"]].adapters.append(_adapter_from_row(row, adapters_dir))
    return documents


def find_documents(conn: sqlite3.Connection, ref: str, adapters_dir: Path) -> list[DocumentEntry]:
    """The documents that ``ref`` names: by full id, else every document whose exact title it is or whose id it
    begins (``MIN_PREFIX`` characters at least). A title that looks like another document's short id names both,
    so the caller sees the ambiguity instead of acting on one of them."""
    hex_ref = ref.strip().lower()
    with transaction(conn, immediate=False):  # one snapshot: a document removed meanwhile is not half found
        exact = document(conn, hex_ref, adapters_dir)
        if exact is not None:
            return [exact]
        rows = conn.execute("SELECT doc_id FROM documents WHERE title = ? ORDER BY created, rowid", (ref,)).fetchall()
        if len(hex_ref) >= MIN_PREFIX and re.fullmatch(r"[0-9a-f]+", hex_ref):
            # Ids are lowercase hex: those that begin with the prefix sort between it and the prefix + "g", a range
            # the primary key's index finds without reading every row.
            rows += conn.execute(
                "SELECT doc_id FROM documents WHERE doc_id >= ? AND doc_id < ? ORDER BY created, rowid",
                (hex_ref, hex_ref + "g"),
            ).fetchall()
        doc_ids = list(dict.fromkeys(row["doc_id"] for row in rows))
        return [document(conn, doc_id, adapters_dir) for doc_id in doc_ids]


def adapter(conn: sqlite3.Connection, key: str, adapters_dir: Path) -> AdapterEntry | None:
    row = conn.execute(_ADAPTER_QUERY + " WHERE a.key = ?", (key,)).fetchone()
    return None if row is None else _adapter_from_row(row, adapters_dir)


def find_adapters(
    conn: sqlite3.Connection, doc_id: str, base_fingerprint: str, settings_fingerprint: str | None, adapters_dir: Path
) -> list[AdapterEntry]:
    """The adapters of a document for a base model (and settings, unless ``None``), newest first."""
    query = _ADAPTER_QUERY + " WHERE a.doc_id = ? AND a.base_fingerprint = ?"
    args: list[Any] = [doc_id, base_fingerprint]
    if settings_fingerprint is not None:
        query += " AND a.settings_fingerprint = ?"
        args.append(settings_fingerprint)
    rows = conn.execute(query + " ORDER BY a.rowid DESC", args).fetchall()
    return [_adapter_from_row(row, adapters_dir) for row in rows]


def adapter_keys(conn: sqlite3.Connection) -> dict[str, str]:
    """Every adapter key with its document's id."""
    return {row["key"]: row["doc_id"] for row in conn.execute("SELECT key, doc_id FROM adapters")}


def document_ids(conn: sqlite3.Connection) -> set[str]:
    return {row["doc_id"] for row in conn.execute("SELECT doc_id FROM documents")}


def has_document(conn: sqlite3.Connection, doc_id: str) -> bool:
    return conn.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone() is not None


def _document_from_row(row: sqlite3.Row) -> DocumentEntry:
    return DocumentEntry(doc_id=row["doc_id"], title=row["title"], tokens=row["tokens"], created=row["created"], route=row["route"])


def _adapter_from_row(row: sqlite3.Row, adapters_dir: Path) -> AdapterEntry:
    path = adapters_dir / row["key"]
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
        path=path,
        manifest=Manifest.from_json(json.loads(row["manifest"]), str(path)),
    )


# ---------------------------------------------------------------------------------------- writing
# Callers hold registry.lock and an immediate transaction.


def insert_document(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    """Add a document row unless one with its id exists (``route`` defaults to "absorb", ``created`` to now)."""
    conn.execute(
        "INSERT OR IGNORE INTO documents (doc_id, title, tokens, route, created) VALUES (?, ?, ?, ?, ?)",
        (row["doc_id"], row["title"], int(row["tokens"]), row.get("route") or "absorb", row.get("created") or now()),
    )


def update_document(conn: sqlite3.Connection, doc_id: str, title: str | None, route: str | None) -> None:
    """Replace a document's title and route; ``None`` keeps the stored one."""
    conn.execute(
        "UPDATE documents SET title = COALESCE(?, title), route = COALESCE(?, route) WHERE doc_id = ?",
        (title, route, doc_id),
    )


def insert_rows(conn: sqlite3.Connection, document: dict[str, Any], adapters: list[tuple[str, Manifest, int]]) -> None:
    """The document's row if it is new, and a row for each ``(key, manifest, size_bytes)`` (replacing one with
    the same key)."""
    insert_document(conn, document)
    for key, manifest, size_bytes in adapters:
        conn.execute(
            "INSERT OR REPLACE INTO adapters (key, doc_id, base_model, base_fingerprint, settings_fingerprint, "
            "created, size_bytes, train_seconds, manifest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                manifest.doc_id,
                manifest.base_model,
                manifest.base_fingerprint,
                manifest.settings_fingerprint,
                manifest.created,
                size_bytes,
                float(manifest.train_seconds),
                json.dumps(manifest.to_json(), sort_keys=True),
            ),
        )


def delete_document(conn: sqlite3.Connection, doc_id: str) -> list[str]:
    """Delete a document's row and its adapters' rows; returns the adapter keys that were deleted."""
    keys = [row["key"] for row in conn.execute("SELECT key FROM adapters WHERE doc_id = ?", (doc_id,))]
    conn.execute("DELETE FROM adapters WHERE doc_id = ?", (doc_id,))
    conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
    return keys


def delete_adapters(conn: sqlite3.Connection, keys: list[str]) -> None:
    conn.executemany("DELETE FROM adapters WHERE key = ?", [(key,) for key in keys])
