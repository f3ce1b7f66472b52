"""``LiftStore``: a LangGraph ``BaseStore`` over lift-tool's memory.

Items live in a SQLite table beside the memory (``<LIFT_HOME>/langgraph_store.sqlite``); a value that holds a
document (see ``lift_tool.store.documents``) also puts that document into memory, along the router's route:
indexed for retrieval, passed in context, or absorbed into an adapter in the background. A search with a query
finds chunks of the items' documents by the memory's retrieval (hybrid by default: embeddings and BM25) and
returns the items best score first, the score being their best chunk's cosine similarity to the query, with the
chunks found. Deleting the last item that holds a document the store put into memory forgets it.

Ops run in the order given, each seeing what the ones before it wrote. ``abatch`` runs ``batch`` in a worker
thread. Items do not expire (``supports_ttl`` is False).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from langchain_core.runnables.config import run_in_executor
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchOp,
    validate_op_namespace,
)

from lift_tool.errors import UnknownDocumentError
from lift_tool.routing import DEFAULT_BUDGET_SECONDS
from lift_tool.store.documents import DEFAULT_FIELDS, Routing, describe, store_document, value_document
from lift_tool.store.items import LiftItem, LiftSearchItem
from lift_tool.store.matching import matches_filter, matches_namespace
from lift_tool.store.table import ItemTable, Row

if TYPE_CHECKING:
    from lift_tool.lift import Lift

TABLE_FILE = "langgraph_store.sqlite"  # under the memory's home
MIN_CHUNKS = 50  # a query search reads at least this many ranked chunks (more for deep pages)


class LiftStore(BaseStore):
    """A LangGraph store whose documents go into lift-tool's memory.

    ``lift``: the memory (default: the process's shared one for the LIFT_* settings, made on first use).
    ``path``: the items' SQLite file (default: ``langgraph_store.sqlite`` in the memory's home).
    ``fields``: the value fields that hold a document's text (default ``text`` and ``content``).
    ``route_override``, ``budget_seconds``, ``background``, ``measure_throughput``: how a document is stored
    (see :class:`lift_tool.store.documents.Routing`; by default the router decides and absorbs in the background).
    """

    supports_ttl = False

    def __init__(
        self,
        lift: "Lift | None" = None,
        *,
        path: str | Path | None = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
        route_override: str | None = None,
        budget_seconds: float | None = DEFAULT_BUDGET_SECONDS,
        background: bool = True,
        measure_throughput: bool = True,
    ):
        self._lift = lift
        self._path = Path(path) if path is not None else None
        self._table: ItemTable | None = None
        self.fields = tuple(fields)
        self.routing = Routing(route_override, budget_seconds, background, measure_throughput)
        self._writing = threading.RLock()  # one put or delete at a time: documents are shared between items

    def __repr__(self) -> str:
        return f"LiftStore({str(self.table.path)!r})"

    @property
    def lift(self) -> "Lift":
        if self._lift is None:
            from lift_tool.lift import shared_lift

            self._lift = shared_lift()
        return self._lift

    @property
    def table(self) -> ItemTable:
        if self._table is None:
            self._table = ItemTable(self._path or self.lift.settings.home / TABLE_FILE)
        return self._table

    # ------------------------------------------------------------------------------------------ batches

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        for op in ops:  # all checked before any runs
            validate_op_namespace(op)
        return [self._run(op) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await run_in_executor(None, self.batch, list(ops))

    def _run(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            row = self.table.get(op.namespace, op.key)
            return None if row is None else LiftItem.of(row, describe(self.lift, row.doc_id))
        if isinstance(op, PutOp):
            return self._put(op)
        if isinstance(op, SearchOp):
            return self._search(op)
        if isinstance(op, ListNamespacesOp):
            return self._list_namespaces(op)
        raise ValueError(f"unknown store operation: {type(op).__name__}")

    # --------------------------------------------------------------------------------------------- writes

    def _put(self, op: PutOp) -> None:
        with self._writing:
            old = self.table.get(op.namespace, op.key)
            if op.value is None:
                if old is not None:
                    self.table.delete(op.namespace, op.key)
                    self._release(old)
                return None
            if not op.namespace:  # ("langgraph", ...) is refused by put() only: LangGraph itself writes there
                raise InvalidNamespaceError("Namespace cannot be empty.")
            value = dict(op.value)
            fields = self.fields if op.index is None else (op.index or ())
            document = value_document(value, fields)
            doc_id, owned = None, False
            if document is not None:
                doc_id = document.doc_id
                known = self.lift.registry.get_document(doc_id) is not None
                owned = not known or any(holder.owned for holder in self.table.holders(doc_id))
                store_document(self.lift, document, self.routing)
            self.table.put(op.namespace, op.key, value, doc_id, owned)
            if old is not None and old.doc_id != doc_id:
                self._release(old)
        return None

    def _release(self, row: Row) -> None:
        """Forget the document ``row`` held, if the store put it into memory and no other item holds it."""
        if row.doc_id is None or not row.owned or self.table.holders(row.doc_id):
            return
        try:
            self.lift.forget(row.doc_id)
        except UnknownDocumentError:  # forgotten already (lift forget, say)
            pass

    # ---------------------------------------------------------------------------------------------- reads

    def _search(self, op: SearchOp) -> list[LiftSearchItem]:
        rows = [row for row in self.table.rows(op.namespace_prefix) if matches_filter(row.value, op.filter)]
        end = op.offset + op.limit
        if not (op.query and op.query.strip()):
            return [LiftSearchItem.of(row, describe(self.lift, row.doc_id)) for row in rows[op.offset:end]]
        found = self._chunks_by_document(op.query, rows, end)
        # Best score first, as LangGraph's stores order them; items whose text the search did not reach follow.
        ranked = sorted((row for row in rows if row.doc_id in found), key=lambda row: -found[row.doc_id][0].score)
        unranked = [row for row in rows if row.doc_id not in found]
        keep = self.lift.settings.retrieval.k
        return [LiftSearchItem.of(row, describe(self.lift, row.doc_id), found.get(row.doc_id, [])[:keep])
                for row in (ranked + unranked)[op.offset:end]]

    def _chunks_by_document(self, query: str, rows: list[Row], wanted: int) -> dict[str, list]:
        """doc_id -> the chunks of that document that the memory's search found for ``query``, best score
        first, for the documents of ``rows``."""
        doc_ids = sorted({row.doc_id for row in rows if row.doc_id is not None})
        if not doc_ids or wanted <= 0:
            return {}
        lift = self.lift
        chunks = lift.store.search(query, k=max(MIN_CHUNKS, 4 * wanted), doc_ids=doc_ids,
                                   method=lift.settings.retrieval.search)
        found: dict[str, list] = {}
        for chunk in sorted(chunks, key=lambda chunk: -chunk.score):
            found.setdefault(chunk.doc_id, []).append(chunk)
        return found

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        namespaces = [ns for ns in self.table.namespaces()
                      if all(matches_namespace(ns, condition) for condition in op.match_conditions or ())]
        if op.max_depth is not None:
            namespaces = [ns[: op.max_depth] for ns in namespaces]
        return sorted(set(namespaces))[op.offset: op.offset + op.limit]

    def close(self) -> None:
        if self._table is not None:
            self._table.close()


def make_store(*_: Any) -> LiftStore:
    """The store for langgraph.json (``"store": {"path": "lift_tool.store.make_store"}``): a ``LiftStore`` over
    the memory of the LIFT_* settings."""
    return LiftStore()


__all__ = ["LiftStore", "make_store"]
