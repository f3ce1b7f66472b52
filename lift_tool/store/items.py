"""The items ``LiftStore`` returns: LangGraph's ``Item`` and ``SearchItem`` with the document they hold.

``document`` says what lift-tool's memory has of the value's document (id, title, route, ``adapter``: whether it
has been absorbed into an adapter, and how its absorption stands), or is None for a value that holds no document.
A search item also has ``chunks``: the passages of that document that the search found, best first, each with
its text, position (chunk index and character offsets) and score. Both appear in ``dict()``, so they reach a
``langgraph_sdk`` client and langmem's search tool too.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from langgraph.store.base import Item, SearchItem

if TYPE_CHECKING:
    from lift_tool.memory.retrieval import RetrievedChunk
    from lift_tool.store.table import Row


class LiftItem(Item):
    """An item and its document."""

    __slots__ = ("document",)

    def __init__(self, *, value: dict[str, Any], key: str, namespace: tuple[str, ...], created_at: datetime,
                 updated_at: datetime, document: dict[str, Any] | None = None):
        super().__init__(value=value, key=key, namespace=namespace, created_at=created_at, updated_at=updated_at)
        self.document = document

    @classmethod
    def of(cls, row: "Row", document: dict[str, Any] | None) -> "LiftItem":
        return cls(value=row.value, key=row.key, namespace=row.namespace, created_at=row.created_at,
                   updated_at=row.updated_at, document=document)

    def dict(self) -> dict:
        return {**super().dict(), "document": self.document}


class LiftSearchItem(SearchItem):
    """A search result: the item, its document, its score (the best chunk's cosine similarity to the query;
    None when the search had no query or found none of its text) and the chunks found."""

    __slots__ = ("document", "chunks")

    def __init__(self, namespace: tuple[str, ...], key: str, value: dict[str, Any], created_at: datetime,
                 updated_at: datetime, score: float | None = None, document: dict[str, Any] | None = None,
                 chunks: list[dict[str, Any]] | None = None):
        super().__init__(namespace, key, value, created_at, updated_at, score)
        self.document = document
        self.chunks = chunks or []

    @classmethod
    def of(cls, row: "Row", document: dict[str, Any] | None, chunks: "list[RetrievedChunk] | None" = None
           ) -> "LiftSearchItem":
        found = [{"text": c.text, "chunk": c.index, "start": c.start, "end": c.end, "score": c.score}
                 for c in chunks or []]
        return cls(row.namespace, row.key, row.value, row.created_at, row.updated_at,
                   score=found[0]["score"] if found else None, document=document, chunks=found)

    def dict(self) -> dict:
        return {**super().dict(), "document": self.document, "chunks": self.chunks}


__all__ = ["LiftItem", "LiftSearchItem"]
