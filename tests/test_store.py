"""``LiftStore`` on a real memory (tiny model, the real embedder and Chroma): documents routed by a put, searched
by a question, filtered, listed and deleted; in a compiled graph, sync and async; and by langmem's memory tools."""

from __future__ import annotations

import asyncio
import time

import pytest

LIGHTHOUSE = ("The Bellmoor lighthouse stands on Gull Rock at the mouth of the Fenn estuary. It was built in 1901 "
              "by the engineer Ada Quill and is painted red and white.")
FERRY = ("The ferry to Vessmoor leaves the harbour at seven every morning and crosses the sound in forty minutes. "
         "Its captain is Jory Penhallow.")
TINY_TRAINING = {"epochs": 0.05, "batch_tokens": 2048, "min_steps": 1}


@pytest.fixture
def lift(tiny_settings, tmp_path):
    from lift_tool.lift import Lift

    training = tiny_settings.training.model_copy(update=TINY_TRAINING)
    return Lift(tiny_settings.model_copy(update={"training": training, "cache_dir": tmp_path / "cache"}))


@pytest.fixture
def store(lift):
    from lift_tool.store import LiftStore

    return LiftStore(lift, measure_throughput=False)


def long_text(name: str) -> str:
    """About 900 tokens: over what the tiny model's 1,024-token window leaves for a document."""
    from lift_tool.sample import sample_document_path

    text = sample_document_path().read_text().replace("Harrowmere", name)
    return text[: text.index("\n\n", 3300)]


def test_a_put_document_is_routed_and_found_by_a_question(store, lift):
    store.put(("notes", "alice"), "lighthouse", {"text": LIGHTHOUSE, "title": "Bellmoor light", "year": 1901})
    store.put(("notes", "alice"), "ferry", {"content": FERRY, "year": 1950})
    store.put(("notes", "bob"), "colour", {"favourite": "green", "by": {"name": "Bob"}})  # no text: a plain item

    item = store.get(("notes", "alice"), "lighthouse")
    assert item.value == {"text": LIGHTHOUSE, "title": "Bellmoor light", "year": 1901}
    document = item.document
    assert document["title"] == "Bellmoor light" and document["route"] == "context" and document["adapter"] is False
    assert lift.resolve(document["doc_id"]).title == "Bellmoor light" and lift.store.has_document(document["doc_id"])
    assert store.get(("notes", "bob"), "colour").document is None

    hits = store.search(("notes",), query="Who built the lighthouse on Gull Rock?", limit=2)
    assert [hit.key for hit in hits] == ["lighthouse", "ferry"]
    assert 0 < hits[0].score <= 1 and "Ada Quill" in hits[0].chunks[0]["text"]
    assert hits[0].dict()["document"]["doc_id"] == document["doc_id"] and hits[0].dict()["chunks"]

    ferry = store.search(("notes", "alice"), query="When does the boat leave?", limit=1)
    assert [hit.key for hit in ferry] == ["ferry"]
    assert [h.key for h in store.search(("notes",), filter={"year": {"$gt": 1920}})] == ["ferry"]
    assert [h.key for h in store.search(("notes",), query="green", filter={"by.name": "Bob"})] == ["colour"]
    assert store.list_namespaces() == [("notes", "alice"), ("notes", "bob")]
    assert store.list_namespaces(suffix=("bob",)) == [("notes", "bob")]
    assert store.list_namespaces(max_depth=1) == [("notes",)]


def test_delete_forgets_what_the_store_put_into_memory_and_nothing_else(store, lift):
    kept = lift.index(FERRY).doc_id  # in memory before the store saw it
    store.put(("notes",), "ferry", {"text": FERRY})
    store.put(("notes",), "a", {"text": LIGHTHOUSE})
    store.put(("notes",), "b", {"text": LIGHTHOUSE})  # the same text: the same document
    doc_id = store.get(("notes",), "a").document["doc_id"]
    assert store.get(("notes",), "b").document["doc_id"] == doc_id

    store.delete(("notes",), "a")
    assert lift.registry.get_document(doc_id) is not None  # "b" still holds it
    store.delete(("notes",), "b")
    assert lift.registry.get_document(doc_id) is None and not lift.store.has_document(doc_id)
    store.delete(("notes",), "ferry")
    assert lift.registry.get_document(kept) is not None
    assert store.get(("notes",), "a") is None and store.search(("notes",)) == []


def test_a_long_document_is_absorbed_in_the_background(store, lift):
    store.put(("docs",), "pellwick", {"text": long_text("Pellwick")})
    document = store.get(("docs",), "pellwick").document
    assert document["absorption"] in ("running", "absorbed") and document["route"] in ("retrieve", "absorb")
    deadline = time.monotonic() + 300
    while store.get(("docs",), "pellwick").document["absorption"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    document = store.get(("docs",), "pellwick").document
    assert document["absorption"] == "absorbed" and document["adapter"] is True and document["route"] == "absorb"
    assert len(lift.resolve(document["doc_id"]).adapters) == 1


def test_a_graph_uses_the_store_sync_and_async(store):
    from langgraph.graph import START, StateGraph
    from langgraph.runtime import Runtime
    from typing_extensions import TypedDict

    class State(TypedDict, total=False):
        note: str
        question: str
        found: list[str]

    def remember(state: State, runtime: Runtime) -> dict:
        runtime.store.put(("memories",), str(len(runtime.store.search(("memories",)))), {"text": state["note"]})
        return {"found": [hit.chunks[0]["text"] for hit in runtime.store.search(("memories",), query=state["question"])]}

    async def aremember(state: State, runtime: Runtime) -> dict:
        await runtime.store.aput(("memories",), "async", {"text": state["note"]})
        hits = await runtime.store.asearch(("memories",), query=state["question"], limit=1)
        return {"found": [hit.chunks[0]["text"] for hit in hits]}

    sync = StateGraph(State).add_node(remember).add_edge(START, "remember").compile(store=store)
    assert "Ada Quill" in sync.invoke({"note": LIGHTHOUSE, "question": "Who built it?"})["found"][0]
    graph = StateGraph(State).add_node(aremember).add_edge(START, "aremember").compile(store=store)
    out = asyncio.run(graph.ainvoke({"note": FERRY, "question": "When does the ferry leave?"}))
    assert "seven every morning" in out["found"][0]


def test_langmem_memory_tools_use_the_store(store):
    langmem = pytest.importorskip("langmem")

    manage = langmem.create_manage_memory_tool(namespace=("memories",), store=store)
    search = langmem.create_search_memory_tool(namespace=("memories",), store=store, response_format="content_and_artifact")
    assert manage.invoke({"content": LIGHTHOUSE}).startswith("created memory")
    asyncio.run(manage.ainvoke({"content": FERRY}))
    call = {"type": "tool_call", "id": "1", "name": search.name, "args": {"query": "Who captains the ferry?", "limit": 1}}
    hits = search.invoke(call).artifact
    assert hits[0].value == {"content": FERRY} and hits[0].document["route"] == "context"
    key = hits[0].key
    manage.invoke({"action": "delete", "id": key})
    assert store.get(("memories",), key) is None
