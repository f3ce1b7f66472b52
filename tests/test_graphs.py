"""The LangGraph graphs on the tiny model: routing, a persisted Q&A session (killed and resumed in real
processes), the conversation absorbed when it outgrows the window, the research assistant, and LangGraph's own
dev server serving them to a langgraph_sdk client."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAINING = {"epochs": 0.05, "batch_tokens": 2048, "min_steps": 1}  # a step or two: these tests are about mechanics
NOTE = ("# The Bellmoor lighthouse\n\nThe Bellmoor lighthouse stands on Gull Rock at the mouth of the Fenn estuary. "
        "It was built in 1901 by the engineer Ada Quill and is painted red and white.")


@pytest.fixture
def configurable(tiny_model_dir, lift_home, tmp_path) -> dict:
    return {
        "model": str(tiny_model_dir),
        "lift_home": str(lift_home),
        "device": "cpu",
        "settings": {"cache_dir": str(tmp_path / "cache"), "training": TINY_TRAINING, "max_new_tokens": 8},
        "measure_throughput": False,  # the prior: 50 ms per token on a CPU
    }


def lift_for(configurable: dict):
    from lift_tool.graphs import Configuration

    return Configuration(**configurable).lift()


def long_text(name: str) -> str:
    """The first half of the bundled sample (about 900 tokens: over what the tiny model's 1,024-token window
    leaves for a document), under another name."""
    from lift_tool.sample import sample_document_path

    text = sample_document_path().read_text().replace("Harrowmere", name)
    return text[: text.index("\n\n", 3300)]


def subprocess_env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


# ------------------------------------------------------------------------------------------------ router


def test_router_passes_a_short_document_in_context(configurable):
    from lift_tool.graphs.router import graph

    out = graph.invoke({"source": NOTE}, {"configurable": configurable})
    assert out["route"] == "context" and out["status"] == "in context"
    assert "fit the 1,024-token window" in out["reason"] and out["reason"] in out["log"][0]
    lift = lift_for(configurable)
    assert lift.resolve(out["doc_id"]).route == "context"
    assert lift.store.has_document(out["doc_id"])  # indexed for retrieval whatever the route


def test_router_absorbs_a_long_document_within_the_budget(configurable):
    from lift_tool.graphs.router import graph

    out = graph.invoke({"source": long_text("Bellwick")}, {"configurable": configurable})
    assert out["route"] == "absorb" and out["status"] == "absorbed", out
    assert "within the 600 s budget" in out["reason"] and out["estimated_seconds"] > 0
    entry = lift_for(configurable).resolve(out["doc_id"])
    assert entry.route == "absorb" and len(entry.adapters) == 1


def test_router_sends_a_document_past_the_budget_to_retrieval(configurable):
    from lift_tool.graphs.router import graph

    out = graph.invoke({"source": long_text("Bellwick")}, {"configurable": {**configurable, "budget_seconds": 5}})
    assert out["route"] == "retrieve" and out["status"] == "indexed"
    assert "over the 5 s budget: retrieval only" in out["reason"]
    entry = lift_for(configurable).resolve(out["doc_id"])
    assert entry.route == "retrieve" and entry.adapters == []


def test_an_override_imposes_the_route(configurable):
    from lift_tool.graphs.router import graph

    by_config = graph.invoke({"source": NOTE}, {"configurable": {**configurable, "route_override": "retrieve"}})
    assert by_config["route"] == "retrieve" and "override" in by_config["reason"]
    by_input = graph.invoke({"source": NOTE + " More.", "route_override": "absorb"}, {"configurable": configurable})
    assert by_input["route"] == "absorb" and by_input["status"] == "absorbed"


def test_background_absorption_returns_at_once(configurable):
    from lift_tool.graphs.router import graph

    out = graph.invoke({"source": long_text("Pellwick")}, {"configurable": {**configurable, "background": True}})
    assert out["route"] == "absorb" and out["status"] == "absorbing"
    lift = lift_for(configurable)
    assert lift.resolve(out["doc_id"]).route == "retrieve"  # retrieval answers until the adapter lands
    deadline = time.monotonic() + 300
    while lift.absorption_status(out["doc_id"]).state == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    status = lift.absorption_status(out["doc_id"])
    assert status.state == "absorbed" and status.route == "absorb", status


def test_the_router_reports_bad_input_in_the_state(configurable):
    from lift_tool.graphs.router import graph

    missing = graph.invoke({"source": "./no/such/report.md"}, {"configurable": configurable})  # an allowed folder
    assert missing["status"] == "error" and "file not found" in missing["error"]
    empty = graph.invoke({"source": "  "}, {"configurable": configurable})
    assert empty["status"] == "error" and "needs a `source`" in empty["error"]
    assert lift_for(configurable).documents() == []


# ------------------------------------------------------------------------------------------------ doc_qa

SESSION = """
import json, sys, time
from lift_tool.graphs.doc_qa import build_graph
from lift_tool.graphs.router import graph as router

db, question, document, then = sys.argv[1:5]
config = {"configurable": {"thread_id": "session-1", **json.loads(sys.argv[5])}}
session = build_graph(db_path=db)
turn = {"messages": [("user", question)]}
if document != "-":
    turn["documents"] = [router.invoke({"source": document}, config)["doc_id"]]
state = session.invoke(turn, config)
print(json.dumps({"questions": [m.text for m in state["messages"] if m.type == "human"],
                  "messages": len(state["messages"]), "documents": state.get("documents"),
                  "sources": [s["doc_id"] for s in state["sources"]]}), flush=True)
if then == "wait":
    time.sleep(600)  # killed here
"""


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_session_resumes_after_the_process_is_killed(configurable, tmp_path):
    document = tmp_path / "bellmoor.md"
    document.write_text(NOTE)
    db = tmp_path / "session.sqlite"
    settings = json.dumps(configurable)

    first = subprocess.Popen([sys.executable, "-c", SESSION, str(db), "Who built the lighthouse?", str(document), "wait",
                              settings], stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        line = first.stdout.readline()
        assert line, "the first turn printed nothing"
        turn_one = json.loads(line)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    assert turn_one["messages"] == 2

    second = subprocess.run([sys.executable, "-c", SESSION, str(db), "When was it built?", "-", "exit", settings],
                            capture_output=True, text=True, env=subprocess_env(), timeout=240)
    assert second.returncode == 0, second.stderr[-2000:]
    turn_two = json.loads(second.stdout.strip().splitlines()[-1])
    assert turn_two["questions"] == ["Who built the lighthouse?", "When was it built?"]  # the history, intact
    assert turn_two["messages"] == 4
    assert turn_two["documents"] == turn_one["documents"]  # the session's document, remembered
    assert turn_two["sources"] == turn_one["documents"]


def test_the_conversation_is_absorbed_when_it_outgrows_its_window(configurable, tmp_path):
    from langgraph.checkpoint.memory import InMemorySaver

    from lift_tool.graphs.doc_qa import build_graph

    session = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {**configurable, "thread_id": "long", "conversation_tokens": 20}}
    first = session.invoke({"messages": [("user", "Please remember that the harbour master is Ottilie Brisk.")]}, config)
    assert not first.get("conversation_documents")  # one exchange: nothing to absorb yet
    second = session.invoke({"messages": [("user", "She rows around Kettle Point every morning at six.")]}, config)
    (part,) = second["conversation_documents"]
    assert second["absorbed_upto"] == 2  # the first exchange left the prompt; the last one stays

    lift = lift_for(configurable)
    entry = lift.resolve(part)
    assert entry.title == "Conversation long, messages 1-2" and entry.route == "absorb" and len(entry.adapters) == 1
    assert "Ottilie Brisk" in lift.registry.document_text(part)

    third = session.invoke({"messages": [("user", "Who is the harbour master?")]}, config)
    assert part in [source["doc_id"] for source in third["sources"]]  # later answers use the absorbed part
    assert len(third["messages"]) == 6


def test_a_bad_document_name_is_answered_not_raised(configurable):
    from lift_tool.graphs.doc_qa import build_graph

    out = build_graph().invoke({"messages": [("user", "Who built it?")], "documents": ["no-such-document"]},
                               {"configurable": configurable})
    assert out["messages"][-1].type == "ai" and "no absorbed document matches" in out["messages"][-1].content


# ------------------------------------------------------------------------------------ research assistant


def test_the_research_assistant_plans_answers_and_reports_with_a_configured_model(configurable):
    from lift_tool.graphs.research_assistant import build_graph
    from lift_tool.scripted_model import ScriptedChatModel

    planner = ScriptedChatModel(script=["1. What is kelp glass made from?\n- Who built the tidal station?\nGlass is nice."])
    writer = ScriptedChatModel(script=[lambda messages: "Vessmoor lives on glass and tides.\n" + messages[-1].content])
    graph = build_graph(planner=planner, writer=writer)
    out = graph.invoke({"question": "What is Vessmoor known for?", "folder": str(ROOT / "examples" / "documents")},
                       {"configurable": configurable})

    assert [d["route"] for d in out["documents"]] == ["context"] * 3  # each went through the router
    assert out["sub_questions"] == ["What is Vessmoor known for?", "What is kelp glass made from?",
                                    "Who built the tidal station?"]
    assert len(out["findings"]) == 3 and all(f["sources"] for f in out["findings"])
    report = out["report"]
    assert report.startswith("# What is Vessmoor known for?") and "Vessmoor lives on glass and tides." in report
    assert "## Sources\n[1] " in report and "- What is kelp glass made from?" in report  # the writer saw the findings
    assert planner.calls == 1 and writer.calls == 1


def test_the_research_assistant_stops_on_an_empty_or_missing_folder(configurable, tmp_path):
    from lift_tool.graphs.research_assistant import graph

    missing = graph.invoke({"question": "Anything?", "folder": str(tmp_path / "nope")}, {"configurable": configurable})
    assert missing["report"].startswith("No report: the folder") and missing["documents"] == []
    (tmp_path / "empty").mkdir()
    empty = graph.invoke({"question": "Anything?", "folder": str(tmp_path / "empty")}, {"configurable": configurable})
    assert "no documents in" in empty["report"]


# ---------------------------------------------------------------------------------------- langgraph dev


def langgraph_dev_script():
    """scripts/langgraph_dev_store.py as a module: its ``langgraph_dev`` starts and stops the server."""
    spec = importlib.util.spec_from_file_location("langgraph_dev_store", ROOT / "scripts" / "langgraph_dev_store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_langgraph_dev_serves_the_graphs(tiny_model_dir, tmp_path, monkeypatch):
    """`langgraph dev` (langgraph-cli[inmem]) on loopback, offline, with langgraph.json; a langgraph_sdk client
    routes a document and holds a two-turn session."""
    pytest.importorskip("langgraph_api", reason="langgraph dev needs langgraph-cli[inmem] (pip install 'lift-tool[dev]')")
    if (shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")) is None:
        pytest.skip("the langgraph command is not installed")
    from langgraph_sdk import get_sync_client

    for name, value in {"LIFT_HOME": str(tmp_path / "home"), "LIFT_MODEL": str(tiny_model_dir), "LIFT_DEVICE": "cpu",
                        "LIFT_CACHE_DIR": str(tmp_path / "cache"), "LIFT_MAX_NEW_TOKENS": "8",
                        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    # The server runs in a scratch folder (it writes its state there) with the project's langgraph.json.
    with langgraph_dev_script().langgraph_dev(tmp_path) as url:
        client = get_sync_client(url=url)
        assert {a["graph_id"] for a in client.assistants.search()} == {"router", "doc_qa", "research_assistant", "memory"}
        routed = client.runs.wait(None, "router", input={"source": NOTE},
                                  config={"configurable": {"measure_throughput": False}})
        assert routed["route"] == "context" and routed["status"] == "in context"

        thread = client.threads.create()["thread_id"]
        first = client.runs.wait(thread, "doc_qa", input={"messages": [{"role": "user", "content": "Who built the lighthouse?"}],
                                                          "documents": [routed["doc_id"]]})
        assert first["messages"][-1]["type"] == "ai"
        assert first["messages"][-1]["response_metadata"]["sources"][0]["doc_id"] == routed["doc_id"]
        second = client.runs.wait(thread, "doc_qa", input={"messages": [{"role": "user", "content": "When?"}]})
        assert [m["type"] for m in second["messages"]] == ["human", "ai", "human", "ai"]
