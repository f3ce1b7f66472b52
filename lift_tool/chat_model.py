"""``LiftChatModel``: lift-tool's memory as a LangChain chat model.

``LiftChatModel`` is the local answering model with lift-tool's memory, as a LangChain ``BaseChatModel``: chains
and graphs call it like any chat model, and each reply comes from the model with the adapters of the documents
the conversation is about swapped in (and retrieved passages, or the document, in the prompt, per ``mode``).

Tool calls: small local models (the default is SmolLM2-135M) cannot emit tool calls reliably, natively or by a
prompt-and-parse protocol, so ``LiftChatModel.bind_tools`` refuses with a message saying what to do. Tool choice
stays in code: the graphs in ``graphs/`` decide what to call, and agents that choose tools themselves use a
tool-calling chat model with ``LiftMemory`` as one of its tools (``lift_tool.scripted_model`` stands in for
one where none is available).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, Sequence

from langchain_core.language_models.chat_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from lift_tool.errors import LiftError

if TYPE_CHECKING:
    from lift_tool.answering import Answer
    from lift_tool.lift import Lift

ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}


class ToolCallingNotSupported(LiftError, NotImplementedError):
    """The local model cannot call tools."""


def to_conversation(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as ``{"role", "content"}`` dicts for the local model's chat template.

    Tool results become user turns (the local model has no tool role); tool-call requests without text are left
    out. Consecutive turns of one role are joined.
    """
    conversation: list[dict[str, str]] = []
    for message in messages:
        role = ROLES.get(message.type)
        text = message.text.strip() if isinstance(message.text, str) else str(message.content)
        if role is None or not text:
            continue
        if isinstance(message, ToolMessage):
            text = f"Result of {message.name or 'a tool'}: {text}"
        if conversation and conversation[-1]["role"] == role:
            conversation[-1]["content"] += "\n\n" + text
        else:
            conversation.append({"role": role, "content": text})
    return conversation


class LiftChatModel(BaseChatModel):
    """The local model with the memory: replies with the adapters of the relevant documents active.

    ``documents``: ids, id prefixes or titles to answer from; None chooses per message by retrieval (and the
    plain base model answers when no stored document is about it). ``mode``: as in ``Lift.ask`` (``auto``,
    ``lift``, ``lift+context``, ``rag``, ``lift+rag``, ``context``, ``base``). The standard parameters:
    ``max_tokens`` (longest reply; default the memory's ``max_new_tokens``), ``temperature`` (0 or None: greedy,
    the default), ``stop`` (strings that end the reply: generation stops there). Replies carry ``usage_metadata``
    (tokens read and written, over every generation the reply took) and the model's name in
    ``response_metadata``. Streaming is supported, sync and async; tool calling is not (see the module's
    docstring).
    """

    lift: Any = Field(default=None, exclude=True)  # a Lift; None: the shared one for the environment's settings
    documents: list[str] | None = None
    mode: str = "auto"
    max_tokens: int | None = Field(default=None, ge=1)
    max_new_tokens: int | None = Field(default=None, ge=1)  # the older name of max_tokens
    temperature: float | None = Field(default=None, ge=0)
    stop: list[str] | None = None
    streaming: bool = False  # invoke streams (through callbacks) as stream does
    model_name: str | None = None  # the name in traces and metadata; default: the memory's model

    @property
    def _llm_type(self) -> str:
        return "lift-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self._model_label(), "documents": self.documents, "mode": self.mode,
                "max_tokens": self._max_tokens(), "temperature": self.temperature, "stop": self.stop}

    def _model_label(self) -> str:
        """The model's name, without loading it: the one given, else the name of the memory's model spec."""
        if self.model_name:
            return self.model_name
        from lift_tool.models.delivery import display_name

        if self.lift is not None:
            return display_name(self.lift.settings.model)
        from lift_tool.config import load_settings

        return display_name(load_settings().model)

    def _max_tokens(self, kwargs: dict[str, Any] | None = None) -> int | None:
        given = (kwargs or {}).get("max_tokens")
        return given if isinstance(given, int) else (self.max_tokens or self.max_new_tokens)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="lift", ls_model_type="chat")
        params["ls_model_name"] = kwargs["model"] if isinstance(kwargs.get("model"), str) else self._model_label()
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = temperature
        if (max_tokens := self._max_tokens(kwargs)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def memory(self) -> "Lift":
        if self.lift is None:
            from lift_tool.lift import shared_lift

            self.lift = shared_lift()
        return self.lift

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):  # noqa: ARG002 - refused whatever is given
        raise ToolCallingNotSupported(
            "LiftChatModel cannot call tools: small local models do not emit tool calls reliably. Give the agent a "
            "tool-calling chat model with LiftMemory among its tools, or use the graphs in graphs/, which choose "
            "tools in code."
        )

    def _answer(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any],
                on_text: Callable[[str], None] | None = None) -> "Answer":
        temperature = kwargs.get("temperature", self.temperature)
        return self.memory().chat(to_conversation(messages), self.documents, self.mode, self._max_tokens(kwargs),
                                  on_text, stop=stop or self.stop, temperature=temperature)

    def _metadata(self, answer: "Answer") -> dict[str, Any]:
        sources = answer.sources()
        return {
            "model_name": self._model_label(),
            "mode": answer.mode,
            "documents": [{"doc_id": d["doc_id"], "title": d["title"]} for d in sources["documents"]],
            "passages": [{k: p[k] for k in ("doc_id", "index", "score")} for p in sources["passages"]],
        }

    @staticmethod
    def _usage(answer: "Answer") -> UsageMetadata:
        return UsageMetadata(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens,
                             total_tokens=answer.input_tokens + answer.output_tokens)

    def _result(self, answer: "Answer") -> ChatResult:
        message = AIMessage(content=answer.text, response_metadata=self._metadata(answer),
                            usage_metadata=self._usage(answer))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _last_chunk(self, answer: "Answer") -> ChatGenerationChunk:
        return ChatGenerationChunk(message=AIMessageChunk(
            content="", response_metadata=self._metadata(answer), usage_metadata=self._usage(answer),
            chunk_position="last"))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return self._result(self._answer(messages, stop, kwargs))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        # The model serves one generation at a time: a thread keeps the event loop free meanwhile (and carries
        # the caller's context, so that tracing sees this run as the parent of what the memory does).
        return self._result(await asyncio.to_thread(self._answer, messages, stop, kwargs))

    def _start(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any],
               hand_over: Callable[[Any], None]) -> threading.Thread:
        """Generation in a thread that hands over each new piece of text as it is decoded, then ``("end",
        answer)`` or ``("error", exception)``."""

        def work() -> None:
            try:
                answer = self._answer(messages, stop, kwargs, on_text=hand_over)
            except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
                hand_over(("error", err))
            else:
                hand_over(("end", answer))

        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(work,), name="lift-chat-stream", daemon=True)
        worker.start()
        return worker

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        pieces: queue.Queue = queue.Queue()
        worker = self._start(messages, stop, kwargs, pieces.put)
        trimmer = _Trimmer()
        while isinstance(piece := pieces.get(), str):
            if text := trimmer.feed(piece):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager is not None:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        worker.join()
        kind, value = piece
        if kind == "error":
            raise value
        yield self._last_chunk(value)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        # The same thread as _stream, its pieces handed to the event loop; new tokens go to the async callback
        # manager itself (its async handlers included), not to a sync copy of it.
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        self._start(messages, stop, kwargs, lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece))
        trimmer = _Trimmer()
        while isinstance(piece := await pieces.get(), str):
            if text := trimmer.feed(piece):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager is not None:
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        kind, value = piece
        if kind == "error":
            raise value
        yield self._last_chunk(value)


class _Trimmer:
    """Streamed pieces with the reply's outer whitespace left out, as invoke's reply is stripped: leading
    whitespace is dropped and trailing whitespace held back until more text follows it."""

    def __init__(self) -> None:
        self.held = ""
        self.started = False

    def feed(self, piece: str) -> str:
        text = self.held + piece if self.started else (self.held + piece).lstrip()
        shown = text.rstrip()
        self.held = text[len(shown):]
        if shown:
            self.started = True
        return shown


__all__ = ["LiftChatModel", "ToolCallingNotSupported", "to_conversation"]
