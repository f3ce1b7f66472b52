"""The LangChain tools, the routing decision, the throughput estimate and background absorption.

Mechanics on the tiny random model (its answers are noise; what is checked is what the tools do with them), and
the whole agent loop once on the real default model: a scripted tool-calling model, the real tools, the real
local answering model.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lift_tool.errors import ConfigError
from lift_tool.routing import decide_route

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAINING = {"epochs": 0.05, "batch_tokens": 2048, "min_steps": 1}  # a step or two: these tests are about mechanics
LIGHTHOUSE = ("# The Bellmoor lighthouse\n\nThe Bellmoor lighthouse stands on Gull Rock at the mouth of the Fenn estuary. "
              "It was built in 1901 by the engineer Ada Quill and is painted red and white. Its light can be seen 24 "
              "kilometres out to sea. The last keeper, Tobias Wren, left in 1987, when the light was automated.")


@pytest.fixture
def lift(tiny_settings, tmp_path):
    """A Lift on the tiny model with a short training recipe, its own memory and its own cache."""
    from lift_tool.lift import Lift

    training = tiny_settings.training.model_copy(update=TINY_TRAINING)
    settings = tiny_settings.model_copy(update={"training": training, "cache_dir": tmp_path / "cache", "max_new_tokens": 8})
    return Lift(settings)


@pytest.fixture
def tools(lift):
    from lift_tool.tool import LiftToolkit

    ask, absorb, listing, forget = LiftToolkit(lift=lift, measure_throughput=False).get_tools()
    return {"ask": ask, "absorb": absorb, "list": listing, "forget": forget}


def call(tool, **args):
    """Invoke a tool the way an agent's tool node does: with a tool call, getting a ToolMessage back."""
    return tool.invoke({"type": "tool_call", "id": "call-1", "name": tool.name, "args": args})


def long_text(name: str) -> str:
    """The first half of the bundled sample (about 900 tokens: over what the tiny model's 1,024-token window
    leaves for a document), under another name."""
    from lift_tool.sample import sample_document_path

    text = sample_document_path().read_text().replace("Harrowmere", name)
    return text[: text.index("\n\n", 3300)]


# ------------------------------------------------------------------------------------------ the decision


def test_a_short_document_goes_in_context():
    decision = decide_route(300, 1024, 320, gpu=False, seconds_per_token=None, budget_seconds=60)
    assert decision.route == "context"
    assert "fit the 1,024-token window" in decision.reason


def test_a_long_document_is_absorbed_within_the_budget_and_retrieved_past_it():
    absorbed = decide_route(2000, 1024, 320, gpu=False, seconds_per_token=0.05, budget_seconds=600)
    assert absorbed.route == "absorb" and absorbed.estimated_seconds == pytest.approx(100)
    assert "within the 600 s budget" in absorbed.reason and "CPU" in absorbed.reason
    retrieved = decide_route(2000, 1024, 320, gpu=True, seconds_per_token=0.05, budget_seconds=60)
    assert retrieved.route == "retrieve"
    assert "over the 60 s budget" in retrieved.reason and "GPU" in retrieved.reason


def test_an_override_wins_and_says_so():
    decision = decide_route(50_000, 1024, 320, gpu=False, seconds_per_token=None, budget_seconds=60, override="absorb")
    assert decision.route == "absorb"
    assert "override" in decision.reason and "stops at the 60 s budget" in decision.reason
    with pytest.raises(ConfigError, match="unknown route"):
        decide_route(10, 1024, 320, gpu=False, seconds_per_token=None, budget_seconds=60, override="memorise")


# ------------------------------------------------------------------------------------------ throughput


def test_throughput_is_measured_once_and_cached(lift):
    from lift_tool.throughput import CACHE_FILE, PRIOR_SECONDS_PER_TOKEN, absorption_throughput

    prior = absorption_throughput(lift, measure=False)
    assert not prior.measured and prior.seconds_per_token == PRIOR_SECONDS_PER_TOKEN["cpu"]

    measured = absorption_throughput(lift)
    assert measured.measured and 0 < measured.seconds_per_token < 10
    # the cost model: the recipe's training tokens per document token at the machine's training tokens per second
    ratio, rate = measured.training_tokens_per_document_token, measured.training_tokens_per_second
    assert ratio > 0 and rate > 0 and measured.seconds_per_token >= ratio / rate
    cache = json.loads((lift.settings.cache_dir / CACHE_FILE).read_text())
    assert measured.key in cache and "|cpu|" in measured.key  # keyed by model fingerprint and device
    assert lift.loaded.fingerprint in measured.key

    started = time.monotonic()
    again = absorption_throughput(lift)
    assert time.monotonic() - started < 1.0  # read back, not measured again
    assert again.seconds_per_token == measured.seconds_per_token
    assert again.training_tokens_per_document_token == ratio and again.training_tokens_per_second == rate
    assert lift.documents() == []  # measuring writes nothing into the memory


# ----------------------------------------------------------------------------------------- LiftMemory


def test_lift_memory_answers_and_cites_the_document(tools, lift):
    stored = call(tools["absorb"], text=LIGHTHOUSE)
    assert stored.status == "success" and "route context" in stored.content
    reply = call(tools["ask"], question="Who built the Bellmoor lighthouse?")
    doc_id = lift.documents()[0].doc_id
    assert reply.status == "success"
    assert f'Sources (with the document in the prompt): "The Bellmoor lighthouse" [{doc_id[:12]}]' in reply.content
    assert reply.artifact["documents"] == [{"doc_id": doc_id, "title": "The Bellmoor lighthouse"}]

    with_passages = call(tools["ask"], question="Who built the Bellmoor lighthouse?", mode="rag")
    assert "passages #0" in with_passages.content
    assert with_passages.artifact["chunks"][0]["doc_id"] == doc_id


def test_a_question_about_nothing_absorbed_says_so(tools):
    empty = call(tools["ask"], question="Who built the lighthouse?")
    assert empty.status == "success" and "Nothing has been absorbed yet" in empty.content

    call(tools["absorb"], text=LIGHTHOUSE)
    unrelated = call(tools["ask"], question="What is the boiling point of mercury in kelvin?")
    assert "None of the stored documents seems to be about this question" in unrelated.content
    assert '"The Bellmoor lighthouse"' in unrelated.content  # what is stored, so the agent can name it


def test_bad_arguments_come_back_as_messages_the_agent_can_act_on(tools):
    missing = call(tools["ask"])
    assert missing.status == "error"
    assert "`question` is missing" in missing.content and '{"question": "<the question>"}' in missing.content
    mistyped = call(tools["ask"], question=42)
    assert mistyped.status == "error" and "`question`" in mistyped.content and "valid string" in mistyped.content
    bad_mode = call(tools["ask"], question="Who?", mode="telepathy")
    assert bad_mode.status == "error" and "`mode`" in bad_mode.content

    neither = call(tools["absorb"])
    assert neither.status == "error" and "exactly one of `text` or `path`" in neither.content
    no_file = call(tools["absorb"], path="no/such/report.pdf")  # in an allowed folder (the working directory)
    assert no_file.status == "error" and "file not found" in no_file.content
    empty = call(tools["absorb"], text="   ")
    assert empty.status == "error" and "empty" in empty.content
    unknown = call(tools["forget"], document="no-such-document")
    assert unknown.status == "error" and "lift list" in unknown.content
    call(tools["absorb"], text=LIGHTHOUSE)
    unknown_doc = call(tools["ask"], question="Who built it?", documents=["no-such-document"])
    assert unknown_doc.status == "error" and "no absorbed document matches" in unknown_doc.content


def test_list_and_forget(tools, tmp_path):
    assert "The memory is empty" in call(tools["list"]).content
    path = tmp_path / "lighthouse.md"
    path.write_text(LIGHTHOUSE)
    call(tools["absorb"], path=str(path), title="Lighthouse")
    listing = call(tools["list"]).content
    assert '1 document(s)' in listing and '"Lighthouse"' in listing and "route context" in listing
    gone = call(tools["forget"], document="Lighthouse")
    assert gone.status == "success" and 'Forgot "Lighthouse"' in gone.content
    assert "The memory is empty" in call(tools["list"]).content


def test_the_tools_work_asynchronously(tools):
    async def run():
        await tools["absorb"].ainvoke({"text": LIGHTHOUSE})
        return await tools["ask"].ainvoke({"type": "tool_call", "id": "a", "name": "lift_memory",
                                           "args": {"question": "Who built the Bellmoor lighthouse?"}})

    reply = asyncio.run(run())
    assert reply.status == "success" and "Sources" in reply.content


def test_a_document_past_the_budget_goes_to_retrieval_with_the_reason(lift):
    from lift_tool.tool import AbsorbDocument

    absorb = AbsorbDocument(lift=lift, budget_seconds=1, measure_throughput=False)
    reply = call(absorb, text=long_text("Bellwick"))
    assert reply.status == "success"
    assert "route retrieve" in reply.content and "over the 1 s budget: retrieval only" in reply.content
    (entry,) = lift.documents()
    assert entry.route == "retrieve" and entry.adapters == []
    assert lift.store.has_document(entry.doc_id)


def test_a_long_document_is_absorbed_by_the_tool(lift):
    from lift_tool.tool import AbsorbDocument

    reply = call(AbsorbDocument(lift=lift, measure_throughput=False), text=long_text("Bellwick"))
    assert "route absorb" in reply.content and "Absorbed into an adapter" in reply.content
    (entry,) = lift.documents()
    assert entry.route == "absorb" and len(entry.adapters) == 1
    assert lift.absorption_status(entry.doc_id).state == "absorbed"


# ------------------------------------------------------------------------------------ background absorption


def test_background_absorption_returns_at_once_and_lands_later(lift):
    job = lift.absorb_in_background(long_text("Bellwick"))
    entry = lift.resolve(job.doc_id)
    assert entry.route == "retrieve" and lift.store.has_document(job.doc_id)  # retrievable right away
    assert lift.absorption_status(job.doc_id).state == "running"
    answer = lift.ask("Where is Bellwick?", [job.doc_id], mode="rag")  # questions go on meanwhile
    assert answer.mode == "rag" and answer.chunks

    job.wait(timeout=300)
    assert job.state == "done", job.error
    status = lift.absorption_status(job.doc_id)
    assert status.state == "absorbed" and status.route == "absorb"
    assert len(lift.resolve(job.doc_id).adapters) == 1


def test_a_failed_background_absorption_leaves_the_document_retrieval_only(lift):
    job = lift.absorb_in_background(long_text("Bellwick"), budget_seconds=0.001).wait(timeout=300)
    assert job.state == "failed"
    status = lift.absorption_status(job.doc_id)
    assert status.state == "failed" and "budget" in status.error and status.route == "retrieve"
    assert lift.resolve(job.doc_id).adapters == []
    assert lift.ask("Where is Bellwick?", [job.doc_id]).mode == "rag"  # auto falls back to retrieval

    cancelled = lift.absorb_in_background(long_text("Pellwick"))
    cancelled.cancel()
    cancelled.wait(timeout=300)
    assert lift.absorption_status(cancelled.doc_id).state == "cancelled"
    assert lift.resolve(cancelled.doc_id).route == "retrieve"


def test_a_cancelled_background_absorption_goes_on_from_its_checkpoint_when_absorbed_again(lift):
    lift.settings.training.checkpoint_seconds = 1e-9  # a checkpoint after every step
    lift.settings.training.min_steps = 60  # steps enough to cancel it half-way, however fast the machine
    text = long_text("Pellwick")
    job = lift.absorb_in_background(text)
    saved = lift.registry.unfinished_path(job.doc_id) / "checkpoint.safetensors"
    deadline = time.monotonic() + 300
    while not saved.is_file() and job.running and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    job.wait(timeout=300)
    assert job.state == "cancelled" and "goes on from there" in job.error
    assert lift.resolve(job.doc_id).adapters == []

    result = lift.absorb(text, progress=False)
    assert result.adapter.manifest.resumed_at_step > 0 and not saved.exists()
    assert lift.absorption_status(job.doc_id).state == "absorbed"


def test_forgetting_a_document_while_it_is_absorbed_stops_the_absorption(lift):
    from lift_tool.errors import UnknownDocumentError

    job = lift.absorb_in_background(long_text("Bellwick"))
    lift.forget(job.doc_id)
    assert not job.running and job.state in {"cancelled", "done"}  # forget waited for it to stop
    with pytest.raises(UnknownDocumentError):
        lift.resolve(job.doc_id)  # and nothing came back when it ended
    assert lift.documents() == [] and not lift.store.has_document(job.doc_id)
    assert not (lift.settings.home / "jobs" / f"{job.doc_id}.json").exists()


def test_an_absorption_whose_process_died_reads_as_interrupted(lift):
    from lift_tool.jobs import JOBS_DIR

    entry = lift.index(LIGHTHOUSE)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    folder = lift.settings.home / JOBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{entry.doc_id}.json").write_text(json.dumps(
        {"doc_id": entry.doc_id, "title": entry.title, "state": "running", "error": None, "pid": dead_pid}))
    status = lift.absorption_status(entry.doc_id)
    assert status.state == "interrupted" and "absorb the document again" in status.error
    assert status.route == "retrieve"


# ---------------------------------------------------------------------------------------------- the agent


def test_an_agent_recovers_from_a_bad_tool_call(tools):
    from langchain.agents import create_agent

    from lift_tool.scripted_model import ScriptedChatModel, reply_with_tool_result, tool_call

    model = ScriptedChatModel(script=[
        tool_call("lift_absorb", text=LIGHTHOUSE),
        tool_call("lift_memory", query="Who built it?"),  # wrong argument name
        tool_call("lift_memory", question="Who built the Bellmoor lighthouse?"),
        reply_with_tool_result,
    ])
    agent = create_agent(model=model, tools=list(tools.values()))
    result = agent.invoke({"messages": [("user", "Who built the Bellmoor lighthouse?")]})
    tool_messages = [m for m in result["messages"] if m.type == "tool"]
    assert [m.status for m in tool_messages] == ["success", "error", "success"]
    assert "`question` is missing" in tool_messages[1].content
    assert result["messages"][-1].content == tool_messages[-1].content
    assert model.calls == 4


@pytest.mark.slow
def test_the_agent_loop_on_the_real_model(lift_home, tmp_path):
    """Scripted tool calls, the real tools, the real local model answering from the document."""
    from langchain.agents import create_agent

    from lift_tool.scripted_model import ScriptedChatModel, ask_tool, reply_with_tool_result, tool_call
    from lift_tool.config import load_settings
    from lift_tool.lift import Lift
    from lift_tool.tool import LiftToolkit

    lift = Lift(load_settings(home=lift_home, max_new_tokens=24))
    path = tmp_path / "bellmoor.md"
    path.write_text(LIGHTHOUSE)
    model = ScriptedChatModel(script=[tool_call("lift_absorb", path=str(path)), ask_tool("lift_memory"),
                                      reply_with_tool_result])
    agent = create_agent(model=model, tools=LiftToolkit(lift=lift, measure_throughput=False).get_tools())
    result = agent.invoke({"messages": [("user", "What colour is the Bellmoor lighthouse painted?")]})

    final = result["messages"][-1].content
    assert "red" in final.lower().split("sources")[0]  # the fact, from the document in the prompt
    assert f'"The Bellmoor lighthouse" [{lift.documents()[0].short_id}]' in final


@pytest.mark.parametrize("args", ["Who built the lighthouse?", None, 5, 2.5, True])
def test_a_tool_call_whose_arguments_are_not_an_object_gets_an_answer_not_an_exception(tools, args):
    """A model may send a bare string or null as a tool call's `args`: each tool answers with a message (the string
    as its one required argument, anything else as a call without arguments), never an exception."""
    for tool in tools.values():
        message = tool.invoke({"name": tool.name, "args": args, "id": "call-1", "type": "tool_call"})
        assert message.tool_call_id == "call-1" and isinstance(message.content, str) and message.content
    by_name = {tool.name: tool for tool in tools.values()}
    if args is None:
        missing = by_name["lift_memory"].invoke({"name": "lift_memory", "args": None, "id": "c", "type": "tool_call"})
        assert "`question` is missing" in missing.content


def test_a_tool_call_with_bad_arguments_is_answered_in_async_too(tools):
    import asyncio

    memory = tools["ask"]
    message = asyncio.run(memory.ainvoke({"name": "lift_memory", "args": None, "id": "c", "type": "tool_call"}))
    assert "`question` is missing" in message.content
