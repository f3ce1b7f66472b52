"""What a LangGraph user expects of the graphs, on the tiny model: schemas that load, a context schema, absorption
progress in the custom stream, a person's approval before a long absorption, async sessions on AsyncSqliteSaver,
the research assistant as a subgraph, and the memory graph on LiftStore."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAINING = {"epochs": 0.05, "batch_tokens": 2048, "min_steps": 1}
NOTE = ("# The Bellmoor lighthouse\n\nThe Bellmoor lighthouse stands on Gull Rock at the mouth of the Fenn estuary. "
        "It was built in 1901 by the engineer Ada Quill and is painted red and white.")
GRAPHS = ("router", "doc_qa", "research_assistant", "memory")


@pytest.fixture
def context(tiny_model_dir, lift_home, tmp_path) -> dict:
    return {"model": str(tiny_model_dir), "lift_home": str(lift_home), "device": "cpu", "measure_throughput": False,
            "settings": {"cache_dir": str(tmp_path / "cache"), "training": TINY_TRAINING, "max_new_tokens": 8}}


def long_text(name: str) -> str:
    from lift_tool.sample import sample_document_path

    text = sample_document_path().read_text().replace("Harrowmere", name)
    return text[: text.index("\n\n", 3300)]


def graph(name: str):
    import importlib

    return importlib.import_module(f"lift_tool.graphs.{name}").graph


@pytest.mark.parametrize("name", GRAPHS)
def test_the_schemas_load(name):
    compiled = graph(name)
    assert compiled.get_input_jsonschema()["properties"] and compiled.get_output_jsonschema()["properties"]
    assert "budget_seconds" in compiled.get_context_jsonschema()["properties"]


def test_a_context_configures_the_router_and_progress_streams(context):
    from lift_tool.graphs.router import graph as router

    events = []
    for mode, chunk in router.stream({"source": long_text("Bellwick")}, context=context, stream_mode=["custom", "values"]):
        events.append(chunk["event"] if mode == "custom" else None)
    assert events.count("absorb_start") == 1 and events.count("absorb_end") == 1 and "absorb_step" in events
    assert events.index("absorb_start") < events.index("absorb_step") < events.index("absorb_end")
    assert chunk["status"] == "absorbed"


def test_a_person_approves_or_declines_a_long_absorption(context):
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    from lift_tool.graphs.router import build_graph

    router = build_graph(checkpointer=InMemorySaver())
    ask = {**context, "approve_over_seconds": 1}
    yes, no = {"configurable": {"thread_id": "yes"}}, {"configurable": {"thread_id": "no"}}
    paused = router.invoke({"source": long_text("Bellwick")}, yes, context=ask)
    (question,) = paused["__interrupt__"]
    assert "into an adapter?" in question.value["question"] and question.value["estimated_seconds"] > 1
    assert router.invoke(Command(resume=True), yes, context=ask)["status"] == "absorbed"

    router.invoke({"source": long_text("Pellwick")}, no, context=ask)
    declined = router.invoke(Command(resume="no"), no, context=ask)
    assert declined["status"] == "indexed" and "declined" in declined["reason"]


def test_an_async_session_on_async_sqlite(context, tmp_path):
    from lift_tool.graphs.doc_qa import build_graph, open_async_graph

    db, config = tmp_path / "session.sqlite", {"configurable": {"thread_id": "a"}}

    async def two_turns():
        async with open_async_graph(db) as session:
            await session.ainvoke({"messages": [("user", "Who built the lighthouse?")]}, config, context=context)
        async with open_async_graph(db) as session:  # reopened: the session goes on
            return await session.ainvoke({"messages": [("user", "When?")]}, config, context=context)

    assert [m.type for m in asyncio.run(two_turns())["messages"]] == ["human", "ai", "human", "ai"]
    assert len(build_graph(db_path=db).get_state(config).values["messages"]) == 4  # the same file, synchronously
    with pytest.raises(NotImplementedError, match="open_async_graph"):
        asyncio.run(build_graph(db_path=db).ainvoke({"messages": [("user", "Hi")]}, config, context=context))


def test_the_research_assistant_is_a_subgraph(context):
    from langgraph.graph import START, StateGraph
    from typing_extensions import TypedDict

    from lift_tool.graphs.research_assistant import build_graph

    class Parent(TypedDict, total=False):
        question: str
        folder: str
        report: str

    parent = StateGraph(Parent).add_node("research", build_graph()).add_edge(START, "research").compile()
    out = parent.invoke({"question": "What is kelp glass made from?", "folder": str(ROOT / "examples" / "documents")},
                        {"configurable": {**context, "max_sub_questions": 1}})
    assert out["report"].startswith("# What is kelp glass made from?") and "## Sources\n[1] " in out["report"]


def test_the_memory_graph_remembers_in_the_store_and_answers(context):
    from lift_tool.graphs import Configuration
    from lift_tool.graphs.memory import build_graph
    from lift_tool.store import LiftStore

    lift = Configuration(**context).lift()
    memory = build_graph(store=LiftStore(lift, measure_throughput=False))
    stored = memory.invoke({"note": NOTE}, context={**context, "user_id": "ada"})["stored"]
    assert stored["document"]["title"] == "The Bellmoor lighthouse" and stored["document"]["route"] == "context"
    out = memory.invoke({"question": "Who built the Bellmoor lighthouse?"}, context={**context, "user_id": "ada"})
    assert out["found"][0]["key"] == stored["key"] and "Ada Quill" in out["found"][0]["passage"]
    assert out["answer"] is not None and out["sources"][0]["doc_id"] == stored["document"]["doc_id"]
    other = memory.invoke({"question": "Who built the Bellmoor lighthouse?"}, context={**context, "user_id": "bob"})
    assert other["found"] == []  # each user's notes are their own
