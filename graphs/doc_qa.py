"""A long question-and-answer session over documents in memory, persisted by a checkpointer.

    answer ──► (the conversation outgrew its share of the window?) ──► absorb_conversation ──► END
                                                               └────────────────────────────► END

Each turn answers the last user message from memory, with the earlier turns in the prompt (``Lift.chat``): the
session's documents (``documents``; when empty, chosen per question by retrieval) with their adapters, retrieved
passages or the document itself, per ``mode``. Every answer carries its sources (``response_metadata["sources"]``
of the AI message, and ``sources`` in the state).

When the conversation in the prompt grows past ``conversation_tokens`` (default: half the model's window), its
older part is itself absorbed into an adapter (and indexed for retrieval) as a document "Conversation <thread>,
messages a-b", and leaves the prompt: later answers use that adapter alongside the documents' ones. The last
exchange stays in the prompt.

Persistence: compile with a checkpointer (``build_graph(db_path="session.sqlite")`` uses LangGraph's SQLite
checkpointer) and pass ``{"configurable": {"thread_id": ...}}``; a session resumes where it stopped after the
process restarts. Async (``ainvoke``, ``astream``): ``async with open_async_graph("session.sqlite") as graph``, on
LangGraph's ``AsyncSqliteSaver``. Input per turn: ``{"messages": [("user", "question")], "documents": [...]}``
(documents once). Absorbing the conversation streams its progress to ``stream_mode="custom"``.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from lift_tool.errors import LiftError
from lift_tool.graphs import Configuration
from lift_tool.graphs.progress import absorb_end, absorb_start, step_writer

_log = logging.getLogger("lift_tool.doc_qa")
KEEP_MESSAGES = 2  # the last exchange stays in the prompt when the rest of the conversation is absorbed


class DocQAState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    documents: list[str]  # the session's documents (ids, id prefixes or titles); empty: chosen per question
    conversation_documents: list[str]  # ids of earlier parts of this conversation, absorbed into adapters
    absorbed_upto: int  # messages before this index are in adapters, no longer in the prompt
    sources: list[dict]  # what the last answer came from


def _in_prompt(state: DocQAState) -> list[AnyMessage]:
    return state.get("messages", [])[state.get("absorbed_upto", 0):]


def answer(state: DocQAState, config: RunnableConfig, runtime: Runtime[Configuration]) -> dict[str, Any]:
    """Answer the last user message from memory, with the conversation so far in the prompt."""
    from lift_tool.chat_model import to_conversation

    messages = _in_prompt(state)
    if not messages or not isinstance(messages[-1], HumanMessage):
        return {"messages": [AIMessage("Ask me a question about the documents.")]}
    configuration = Configuration.of(runtime, config)
    try:
        lift = configuration.lift()
        question = messages[-1].text
        documents = list(state.get("documents") or [])
        if not documents:  # chosen per question, among everything stored
            documents = [entry.doc_id for entry in lift.choose_documents(question)]
        documents += [d for d in state.get("conversation_documents", []) if d not in documents]
        reply = lift.chat(to_conversation(messages), documents or None, mode=configuration.mode)
    except LiftError as err:  # a bad document name, an empty question...: said in the conversation
        return {"messages": [AIMessage(f"I could not answer: {err}")], "sources": []}
    sources = reply.sources()["documents"]
    message = AIMessage(reply.text, response_metadata={"mode": reply.mode, "sources": sources})
    return {"messages": [message], "sources": sources}


def _conversation_limit(configuration: Configuration, lift) -> int:
    return configuration.conversation_tokens or lift.context_window // 2


def _conversation_tokens(lift, messages: list[AnyMessage]) -> int:
    text = "\n".join(message.text for message in messages)
    return len(lift.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def outgrown(state: DocQAState, config: RunnableConfig, runtime: Runtime[Configuration]) -> str:
    """Whether the conversation in the prompt has outgrown its share of the window."""
    configuration = Configuration.of(runtime, config)
    try:
        lift = configuration.lift()
    except LiftError:  # the answer node has already said what went wrong
        return END
    messages = _in_prompt(state)
    too_long = len(messages) > KEEP_MESSAGES and _conversation_tokens(lift, messages) > _conversation_limit(configuration, lift)
    return "absorb_conversation" if too_long else END


def absorb_conversation(state: DocQAState, config: RunnableConfig, runtime: Runtime[Configuration]) -> dict[str, Any]:
    """Absorb the older part of the conversation into an adapter (its progress streamed), and take it out of the
    prompt."""
    from lift_tool.documents import make_document

    configuration = Configuration.of(runtime, config)
    lift = configuration.lift()
    start = state.get("absorbed_upto", 0)
    cut = len(state["messages"]) - KEEP_MESSAGES
    lines = []
    for message in state["messages"][start:cut]:
        speaker = "User" if isinstance(message, HumanMessage) else "Assistant"
        lines.append(f"{speaker}: {message.text}")
    thread = (config.get("configurable") or {}).get("thread_id", "session")
    document = make_document("\n\n".join(lines), title=f"Conversation {thread}, messages {start + 1}-{cut}")
    lift.index(document, route="retrieve")  # retrieval finds it at once; the adapter follows
    write = runtime.stream_writer
    absorb_start(write, document.doc_id, document.title, None, None)
    status, error = ("absorbing" if configuration.background else "absorbed"), None
    try:
        if configuration.background:
            lift.absorb_in_background(document, budget_seconds=configuration.budget_seconds)
        else:
            lift.absorb(document, budget_seconds=configuration.budget_seconds, progress=False,
                        on_step=step_writer(write, document.doc_id))
    except LiftError as err:  # the part stays retrievable; the session goes on
        status, error = "failed", str(err)
        _log.warning("could not absorb %r: %s (kept for retrieval)", document.title, err)
    absorb_end(write, document.doc_id, status, error)
    _log.info("absorbed %r (%d messages) out of the prompt", document.title, cut - start)
    return {"absorbed_upto": cut, "conversation_documents": [*state.get("conversation_documents", []), document.doc_id]}


def build_graph(checkpointer=None, db_path: str | Path | None = None):
    """The session graph. ``db_path``: persist sessions in this SQLite file (LangGraph's ``SqliteSaver``);
    or pass any ``checkpointer``. Without either, state lives only as long as the run (or the server's own
    persistence, under ``langgraph dev``)."""
    if db_path is not None:
        checkpointer = sqlite_checkpointer(db_path)
    builder = StateGraph(DocQAState, context_schema=Configuration)
    builder.add_node("answer", answer)
    builder.add_node("absorb_conversation", absorb_conversation)
    builder.add_edge(START, "answer")
    builder.add_conditional_edges("answer", outgrown, ["absorb_conversation", END])
    builder.add_edge("absorb_conversation", END)
    return builder.compile(checkpointer=checkpointer, name="doc_qa")


def sqlite_checkpointer(db_path: str | Path):
    """LangGraph's SQLite checkpointer on ``db_path`` (created if missing), for ``invoke`` and ``stream``."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    class SyncSqliteSaver(SqliteSaver):
        async def aget_tuple(self, config):  # the first call of ainvoke and astream: say what to use instead
            raise NotImplementedError(f"this session graph is synchronous (SqliteSaver); for ainvoke and astream use "
                                      f"`async with open_async_graph({str(db_path)!r}) as graph:`")

    # The graph may write checkpoints from another thread than the one that opened the file.
    return SyncSqliteSaver(sqlite3.connect(str(_db_file(db_path)), check_same_thread=False))


@asynccontextmanager
async def open_async_graph(db_path: str | Path) -> AsyncIterator[Any]:
    """The session graph on LangGraph's ``AsyncSqliteSaver`` over ``db_path``, for ``ainvoke`` and ``astream``;
    the file is closed when the block ends. The same file works with ``build_graph(db_path=...)``."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(_db_file(db_path))) as saver:
        yield build_graph(checkpointer=saver)


def _db_file(db_path: str | Path) -> Path:
    path = Path(db_path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


graph = build_graph()
