"""What a store value means to lift-tool's memory: the document it holds, how that document is stored (along the
router's route), and what an item says about it.

A value holds a document when its indexed fields have text: by default its ``text`` and ``content`` fields
(``content`` is where langmem's memory tools put a memory), or the field paths given to ``put(..., index=[...])``
in LangGraph's path syntax (``"notes.body"``, ``"chapters[*].text"``, ``"$"`` for the whole value);
``index=False`` keeps a value out of memory. Its ``title`` field, if any, titles the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from langgraph.store.base import get_text_at_path

from lift_tool.routing import DEFAULT_BUDGET_SECONDS

if TYPE_CHECKING:
    from lift_tool.documents import Document
    from lift_tool.lift import Lift

DEFAULT_FIELDS = ("text", "content")


@dataclass(frozen=True)
class Routing:
    """How a put stores its document: the router decides (``route_override`` imposes a route), and an absorption
    runs in the background (``background``) so that ``put`` returns once the document is indexed."""

    route_override: str | None = None  # context | absorb | retrieve
    budget_seconds: float | None = DEFAULT_BUDGET_SECONDS  # the longest absorption the router accepts
    background: bool = True
    measure_throughput: bool = True  # False: estimate absorption time from a prior, without measuring once


def document_text(value: dict[str, Any], fields: Sequence[str]) -> str:
    """The text at ``fields`` in ``value``, joined by blank lines; "" when there is none."""
    texts = [text for field in fields for text in get_text_at_path(value, field)]
    return "\n\n".join(text for text in texts if text.strip())


def value_document(value: dict[str, Any], fields: Sequence[str]) -> "Document | None":
    """The document ``value`` holds, or None."""
    from lift_tool.documents import make_document

    text = document_text(value, fields)
    if not text:
        return None
    title = value.get("title")
    return make_document(text, title=title.strip() if isinstance(title, str) and title.strip() else None)


def store_document(lift: "Lift", document: "Document", routing: Routing) -> None:
    """Put ``document`` into memory along its route, unless it is there already (the same text is the same
    document: its adapter, if any, is kept)."""
    from lift_tool.routing import plan_route, store_routed

    if lift.registry.get_document(document.doc_id) is not None and lift.store.has_document(document.doc_id):
        return
    decision = plan_route(lift, document, routing.route_override, routing.budget_seconds, routing.measure_throughput)
    store_routed(lift, document, decision, background=routing.background)


def describe(lift: "Lift", doc_id: str | None) -> dict[str, Any] | None:
    """What an item says about its document: id, title, route, whether it has an adapter, and where its
    absorption stands ("absorbed", "running", "failed", "not absorbed", ...; "forgotten" once it left memory)."""
    if doc_id is None:
        return None
    entry = lift.registry.get_document(doc_id)
    if entry is None:
        return {"doc_id": doc_id, "title": None, "route": None, "adapter": False, "absorption": "forgotten"}
    status = lift.jobs.status(entry)
    return {"doc_id": doc_id, "title": entry.title, "route": entry.route, "adapter": bool(entry.adapters),
            "absorption": status.state, "error": status.error}


__all__ = ["DEFAULT_FIELDS", "Routing", "describe", "document_text", "store_document", "value_document"]
