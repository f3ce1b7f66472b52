"""LangGraph's long-term memory over lift-tool's: ``LiftStore``, a ``BaseStore`` whose documents are indexed for
retrieval and absorbed into adapters as the router decides.

    from lift_tool.store import LiftStore

    store = LiftStore()                                    # the memory of the LIFT_* settings
    store.put(("docs", "alice"), "report", {"text": open("report.md").read(), "title": "Annual report"})
    store.get(("docs", "alice"), "report").document        # {"doc_id", "title", "route", "adapter", "absorption", ...}
    for hit in store.search(("docs",), query="Who chairs the board?", limit=3):
        print(hit.key, hit.score, hit.chunks[0]["text"])
    graph = builder.compile(store=store)                   # nodes reach it as runtime.store

In langgraph.json: ``"store": {"path": "lift_tool.store.make_store"}``. One idea per module: ``table`` (the
items in SQLite), ``matching`` (filters and namespace conditions), ``documents`` (the document a value holds and
how it is stored), ``items`` (what is returned), ``lift_store`` (the store).
"""

from lift_tool.store.documents import DEFAULT_FIELDS, Routing
from lift_tool.store.items import LiftItem, LiftSearchItem
from lift_tool.store.lift_store import LiftStore, make_store

__all__ = ["DEFAULT_FIELDS", "LiftItem", "LiftSearchItem", "LiftStore", "Routing", "make_store"]
