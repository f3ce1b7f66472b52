"""Notes kept in the graph's LangGraph store, and questions answered from them: ``LiftStore`` as long-term memory.

    remember ──► recall ──► END

- **remember**: with a ``note`` in the input, puts it in the store under ``("memories", user_id)``. In a
  ``LiftStore`` the note goes into lift-tool's memory along the router's route (in context, retrieval, or absorbed
  into an adapter in the background when it is long); ``stored`` says which, and whether it has an adapter yet.
- **recall**: with a ``question``, searches the store and answers from the best note's document (its adapter and
  retrieved passages, per ``mode``); in a store of another kind, from the passages found, in the prompt.

The store is the one the graph runs with: under ``langgraph dev``, langgraph.json's (``lift_tool.store.make_store``);
``build_graph(store=...)``; or, with none, a ``LiftStore`` over the memory of the context's settings.

Input: ``{"note": optional, "title": optional, "question": optional}``. Context (or ``configurable``):
``user_id``, ``mode`` and the memory settings of ``lift_tool.graphs.Configuration``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from lift_tool.errors import LiftError
from lift_tool.graphs import Configuration
from lift_tool.store import LiftStore

FOUND = 3  # notes returned by recall


class MemoryInput(TypedDict, total=False):
    note: str  # something to remember
    title: str | None  # the note's title (default: its first line)
    question: str  # something to answer from what is remembered


class MemoryOutput(TypedDict, total=False):
    stored: dict | None  # key and document (doc_id, title, route, adapter, absorption) of the note stored
    found: list[dict]  # the notes found for the question: key, score, title, passage
    answer: str | None
    mode: str | None  # how it was answered (see Lift.ask)
    sources: list[dict]


class MemoryState(MemoryInput, MemoryOutput, total=False):
    pass


def _store(runtime: Runtime, configuration: Configuration):
    if runtime.store is not None:
        return runtime.store
    return LiftStore(configuration.lift(), route_override=configuration.route_override,
                     budget_seconds=configuration.budget_seconds, measure_throughput=configuration.measure_throughput)


def remember(state: MemoryState, config: RunnableConfig, runtime: Runtime[Configuration]) -> dict[str, Any]:
    """Put the note in the store (the same note is one item)."""
    note = (state.get("note") or "").strip()
    if not note:
        return {"stored": None}
    configuration = Configuration.of(runtime, config)
    store = _store(runtime, configuration)
    namespace, key = ("memories", configuration.user_id), hashlib.sha256(note.encode()).hexdigest()[:16]
    store.put(namespace, key, {"text": note, **({"title": state["title"]} if state.get("title") else {})})
    return {"stored": {"key": key, "document": getattr(store.get(namespace, key), "document", None)}}


def recall(state: MemoryState, config: RunnableConfig, runtime: Runtime[Configuration]) -> dict[str, Any]:
    """Find the notes about the question and answer from them."""
    question = (state.get("question") or "").strip()
    if not question:
        return {"found": [], "answer": None, "mode": None, "sources": []}
    configuration = Configuration.of(runtime, config)
    store = _store(runtime, configuration)
    hits = store.search(("memories", configuration.user_id), query=question, limit=FOUND)
    found = [{"key": hit.key, "score": hit.score, "title": (getattr(hit, "document", None) or {}).get("title"),
              "passage": hit.chunks[0]["text"] if getattr(hit, "chunks", None) else str(hit.value)} for hit in hits]
    lift = store.lift if isinstance(store, LiftStore) else configuration.lift()
    documents = [hit.document["doc_id"] for hit in hits
                 if (getattr(hit, "document", None) or {}).get("absorption") not in (None, "forgotten")]
    try:
        if documents:
            reply = lift.ask(question, documents[:1], mode=configuration.mode)
        else:
            passages = "\n\n".join(f["passage"] for f in found) or None
            reply = lift.ask(question, mode="base", context=passages)
    except LiftError as err:
        return {"found": found, "answer": f"I could not answer: {err}", "mode": None, "sources": []}
    return {"found": found, "answer": reply.text, "mode": reply.mode, "sources": reply.sources()["documents"]}


def build_graph(checkpointer=None, store=None):
    """The memory graph, on ``store`` (default: the one it runs with, else a LiftStore on the configured memory)."""
    builder = StateGraph(MemoryState, input_schema=MemoryInput, output_schema=MemoryOutput,
                         context_schema=Configuration)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    return builder.compile(checkpointer=checkpointer, store=store, name="memory")


graph = build_graph()
