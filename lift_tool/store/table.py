"""The store's items: one SQLite table of (namespace, key) -> JSON value, each with the document it holds.

A namespace is kept as its labels joined by "." (LangGraph forbids "." in a label, so the join is unambiguous),
and a namespace prefix is matched label by label: ("a", "b") matches ("a", "b") and ("a", "b", "c"), never
("a", "bc"). ``doc_id`` names the document in lift-tool's memory that the value holds (None: a plain item);
``owned`` says that the store put that document into memory, so that deleting the last item that holds it forgets
it, and that a document stored before (by ``lift absorb``, say) is never forgotten by the store.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lift_tool.errors import InputError, StorageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    prefix TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    doc_id TEXT,
    owned INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (prefix, key)
);
CREATE INDEX IF NOT EXISTS items_by_document ON items (doc_id);
"""
COLUMNS = "prefix, key, value, doc_id, owned, created_at, updated_at"


@dataclass
class Row:
    """One stored item."""

    namespace: tuple[str, ...]
    key: str
    value: dict[str, Any]
    doc_id: str | None
    owned: bool
    created_at: datetime
    updated_at: datetime


def _row(record: tuple) -> Row:
    prefix, key, value, doc_id, owned, created, updated = record
    return Row(tuple(prefix.split(".")), key, json.loads(value), doc_id, bool(owned),
               datetime.fromisoformat(created), datetime.fromisoformat(updated))


def _within(namespace_prefix: tuple[str, ...]) -> tuple[str, list]:
    """The SQL condition (and its parameters) for the namespaces under ``namespace_prefix``."""
    if not namespace_prefix:
        return "1", []
    joined = ".".join(namespace_prefix)
    return "(prefix = ? OR substr(prefix, 1, ?) = ?)", [joined, len(joined) + 1, joined + "."]


class ItemTable:
    """The items of one store, in a SQLite file (created on first use). Threads may share it."""

    def __init__(self, path: Path):
        self.path = Path(path).expanduser()
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def _db(self) -> sqlite3.Connection:
        with self._lock:
            if self._connection is None:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    connection = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False,
                                                 isolation_level=None)
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.executescript(SCHEMA)
                except (OSError, sqlite3.Error) as err:
                    raise StorageError(f"cannot open the store's items in {self.path}: {err}") from None
                self._connection = connection
            return self._connection

    def _query(self, sql: str, parameters: list | tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db().execute(sql, parameters).fetchall()

    def get(self, namespace: tuple[str, ...], key: str) -> Row | None:
        found = self._query(f"SELECT {COLUMNS} FROM items WHERE prefix = ? AND key = ?", (".".join(namespace), key))
        return _row(found[0]) if found else None

    def put(self, namespace: tuple[str, ...], key: str, value: dict[str, Any], doc_id: str | None, owned: bool) -> None:
        """Store ``value`` (its creation time kept if the item exists)."""
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InputError(f"a store value must be JSON: {err}") from None
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")  # sorts as text
        self._query(
            f"INSERT INTO items ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (prefix, key) DO UPDATE SET "
            "value = excluded.value, doc_id = excluded.doc_id, owned = excluded.owned, updated_at = excluded.updated_at",
            (".".join(namespace), key, text, doc_id, int(owned), now, now),
        )

    def delete(self, namespace: tuple[str, ...], key: str) -> None:
        self._query("DELETE FROM items WHERE prefix = ? AND key = ?", (".".join(namespace), key))

    def rows(self, namespace_prefix: tuple[str, ...]) -> list[Row]:
        """The items under ``namespace_prefix``, most recently updated first."""
        condition, parameters = _within(namespace_prefix)
        found = self._query(f"SELECT {COLUMNS} FROM items WHERE {condition} ORDER BY updated_at DESC, rowid DESC",
                            parameters)
        return [_row(record) for record in found]

    def namespaces(self) -> list[tuple[str, ...]]:
        return [tuple(prefix.split(".")) for (prefix,) in self._query("SELECT DISTINCT prefix FROM items")]

    def holders(self, doc_id: str) -> list[Row]:
        """The items that hold document ``doc_id``."""
        found = self._query(f"SELECT {COLUMNS} FROM items WHERE doc_id = ?", (doc_id,))
        return [_row(record) for record in found]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
