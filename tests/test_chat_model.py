"""LiftChatModel (the local model with the memory, as a LangChain chat model) and the scripted tool caller."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from lift_tool.chat_model import LiftChatModel, ToolCallingNotSupported, to_conversation
from lift_tool.errors import LiftError
from lift_tool.scripted_model import ScriptedChatModel, tool_call

NOTE = ("# The Bellmoor lighthouse\n\nThe Bellmoor lighthouse stands on Gull Rock. It was built in 1901 by the "
        "engineer Ada Quill and is painted red and white.")


@pytest.fixture
def lift(tiny_settings, tmp_path):
    from lift_tool.lift import Lift

    training = tiny_settings.training.model_copy(update={"epochs": 0.05, "batch_tokens": 2048})
    return Lift(tiny_settings.model_copy(update={"training": training, "cache_dir": tmp_path / "cache", "max_new_tokens": 8}))


def test_messages_become_a_conversation_for_the_chat_template():
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("Who built it?"),
        AIMessage("", tool_calls=[{"name": "lift_memory", "args": {"question": "Who?"}, "id": "c1"}]),
        ToolMessage("Ada Quill.", tool_call_id="c1", name="lift_memory"),
        AIMessage("Ada Quill built it."),
        HumanMessage("When?"),
        HumanMessage("In which year?"),
    ]
    assert to_conversation(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who built it?\n\nResult of lift_memory: Ada Quill."},
        {"role": "assistant", "content": "Ada Quill built it."},
        {"role": "user", "content": "When?\n\nIn which year?"},
    ]


def test_the_chat_model_answers_from_the_named_document(lift):
    entry = lift.index(NOTE)
    model = LiftChatModel(lift=lift, documents=[entry.doc_id], mode="context")
    reply = model.invoke([HumanMessage("Who built the Bellmoor lighthouse?")])
    assert isinstance(reply, AIMessage)
    assert reply.response_metadata["mode"] == "context"
    assert reply.response_metadata["documents"] == [{"doc_id": entry.doc_id, "title": "The Bellmoor lighthouse"}]

    retrieved = LiftChatModel(lift=lift, mode="rag").invoke("Who built the Bellmoor lighthouse?")
    assert retrieved.response_metadata["mode"] == "rag"  # chosen by retrieval, since none was named
    assert retrieved.response_metadata["passages"][0]["doc_id"] == entry.doc_id
    unrelated = LiftChatModel(lift=lift).invoke("What is the boiling point of mercury in kelvin?")
    assert unrelated.response_metadata["mode"] == "base"  # no stored document is about it


@pytest.mark.slow
def test_streaming_gives_the_same_text_as_invoke(lift_home):
    """On the real model (the tiny one only says whitespace): pieces as they are decoded, the same reply."""
    from lift_tool.config import load_settings
    from lift_tool.lift import Lift

    lift = Lift(load_settings(home=lift_home))
    lift.index(NOTE)
    model = LiftChatModel(lift=lift, mode="context", documents=["The Bellmoor lighthouse"], max_new_tokens=16)
    whole = model.invoke("Who built the Bellmoor lighthouse?")
    chunks = list(model.stream("Who built the Bellmoor lighthouse?"))
    assert whole.content and len([c for c in chunks if c.content]) > 3  # streamed in pieces
    assert "".join(chunk.content for chunk in chunks) == whole.content  # greedy decoding: the same text
    assert any(chunk.response_metadata.get("mode") == "context" for chunk in chunks)


def test_a_conversation_longer_than_the_window_loses_its_oldest_turns(lift, monkeypatch):
    import lift_tool.answering
    from lift_tool.prompts import render

    prompts = []
    real_generate = lift_tool.answering.generate_reply

    def generate_and_record(model, tokenizer, conversation, *args, **kwargs):  # the real generation, observed
        prompts.append(conversation)
        return real_generate(model, tokenizer, conversation, *args, **kwargs)

    monkeypatch.setattr(lift_tool.answering, "generate_reply", generate_and_record)
    lift.settings = lift.settings.model_copy(update={"context_window": 160})
    history = [SystemMessage("You are terse.")]
    for turn in range(12):
        history += [HumanMessage(f"Tell me fact number {turn} about the sea and its many harbours."),
                    AIMessage(f"Fact {turn}: the sea has harbours, and the harbours have boats and gulls.")]
    LiftChatModel(lift=lift, mode="base").invoke(history + [HumanMessage("And the last one?")])

    (prompt,) = prompts
    tokenizer = lift.loaded.tokenizer
    length = len(tokenizer(render(tokenizer, prompt, True), add_special_tokens=False)["input_ids"])
    assert length + lift.settings.max_new_tokens <= 160
    assert prompt[0] == {"role": "system", "content": "You are terse."}  # kept
    assert prompt[-1] == {"role": "user", "content": "And the last one?"}  # kept
    assert "fact number 0 " not in str(prompt) and "Fact 11:" in str(prompt)  # the oldest went, the newest stayed


def test_the_chat_model_refuses_tools_and_says_what_to_do(lift):
    with pytest.raises(ToolCallingNotSupported, match="LiftMemory") as caught:
        LiftChatModel(lift=lift).bind_tools([])
    assert isinstance(caught.value, LiftError)


def test_a_bad_document_name_is_a_lift_error(lift):
    with pytest.raises(LiftError, match="no absorbed document matches"):
        LiftChatModel(lift=lift, documents=["no-such-document"]).invoke("Who built it?")


def test_the_scripted_model_follows_its_script_and_checks_tool_names():
    model = ScriptedChatModel(script=[tool_call("lift_memory", question="Who?"), "Ada Quill."])

    bound = model.bind_tools([{"type": "function", "function": {"name": "lift_memory", "description": "ask",
                                                                 "parameters": {"type": "object", "properties": {}}}}])
    first = bound.invoke("Who built it?")
    assert first.tool_calls[0]["name"] == "lift_memory" and first.tool_calls[0]["args"] == {"question": "Who?"}
    assert bound.invoke("...").content == "Ada Quill."
    with pytest.raises(ValueError, match="only 2 steps"):
        bound.invoke("more?")

    stray = ScriptedChatModel(script=[tool_call("lift_absorb", text="x")]).bind_tools(
        [{"type": "function", "function": {"name": "lift_memory", "description": "ask", "parameters": {}}}])
    with pytest.raises(ValueError, match="not among the bound tools"):
        stray.invoke("go")


@pytest.mark.slow
def test_stop_sequences_stop_generation_and_usage_is_counted(real_model_dir, real_loaded, tmp_path):
    """On the real model: a stop string ends generation there (fewer tokens written, not text cut afterwards),
    streamed or not; usage counts what was read and written; the model's name is in the metadata."""
    from lift_tool.config import Settings
    from lift_tool.lift import Lift

    lift = Lift(Settings(model=str(real_model_dir), home=tmp_path / "home", device="cpu"), model=real_loaded)
    model = LiftChatModel(lift=lift, mode="base", max_tokens=40)
    question = "Name three colours of the rainbow, then say why the sky is blue."
    whole = model.invoke(question)
    words = whole.content.split()
    assert len(words) > 6
    marker = words[3]
    cut = model.invoke(question, stop=[marker])
    assert cut.content == whole.content[: whole.content.find(marker)].strip()
    assert cut.usage_metadata["output_tokens"] < whole.usage_metadata["output_tokens"]  # it stopped there
    assert cut.usage_metadata["input_tokens"] == whole.usage_metadata["input_tokens"] > 10
    assert whole.usage_metadata["total_tokens"] == whole.usage_metadata["input_tokens"] + whole.usage_metadata["output_tokens"]
    assert whole.response_metadata["model_name"] == real_model_dir.name
    streamed = list(LiftChatModel(lift=lift, mode="base", max_tokens=40, stop=[marker]).stream(question))
    assert "".join(chunk.content for chunk in streamed) == cut.content  # the stop string never streamed
    assert streamed[-1].chunk_position == "last" and streamed[-1].usage_metadata["output_tokens"] == cut.usage_metadata["output_tokens"]


@pytest.mark.slow
def test_async_streaming_reaches_async_callbacks_and_temperature_samples(real_model_dir, real_loaded, tmp_path):
    import asyncio

    import torch
    from langchain_core.callbacks import AsyncCallbackHandler

    from lift_tool.config import Settings
    from lift_tool.lift import Lift

    class Collect(AsyncCallbackHandler):
        def __init__(self):
            self.tokens: list[str] = []
            self.loops: set = set()

        async def on_llm_new_token(self, token, **kwargs):
            self.tokens.append(token)
            self.loops.add(asyncio.get_running_loop())

    lift = Lift(Settings(model=str(real_model_dir), home=tmp_path / "home", device="cpu"), model=real_loaded)
    model = LiftChatModel(lift=lift, mode="base", max_tokens=16)
    handler = Collect()

    async def run():
        chunks = [chunk async for chunk in model.astream("Say hello to the sea.", config={"callbacks": [handler]})]
        return chunks, asyncio.get_running_loop()

    chunks, loop = asyncio.run(run())
    text = "".join(chunk.content for chunk in chunks)
    assert text and "".join(handler.tokens) == text  # every piece reached the async handler
    assert handler.loops == {loop}  # on the caller's event loop, not a sync copy of the manager in a thread
    assert text == model.invoke("Say hello to the sea.").content  # greedy by default

    hot = LiftChatModel(lift=lift, mode="base", max_tokens=24, temperature=1.5)
    replies = set()
    for seed in range(3):
        torch.manual_seed(seed)
        replies.add(hot.invoke("Write a line about the sea.").content)
    assert len(replies) > 1  # sampled
