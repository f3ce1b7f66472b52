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

import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
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
    ``lift``, ``rag``, ``lift+rag``, ``context``, ``base``). Streaming is supported; tool calling is not (see
    the module's docstring).
    """

    lift: Any = Field(default=None, exclude=True)  # a Lift; None: the shared one for the environment's settings
    documents: list[str] | None = None
    mode: str = "auto"
    max_new_tokens: int | None = None

    @property
    def _llm_type(self) -> str:
        return "lift-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"documents": self.documents, "mode": self.mode, "max_new_tokens": self.max_new_tokens}

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

    def _answer(self, messages: list[BaseMessage], on_text: Callable[[str], None] | None = None) -> "Answer":
        return self.memory().chat(to_conversation(messages), self.documents, self.mode, self.max_new_tokens, on_text)

    @staticmethod
    def _metadata(answer: "Answer") -> dict[str, Any]:
        sources = answer.sources()
        return {
            "mode": answer.mode,
            "documents": [{"doc_id": d["doc_id"], "title": d["title"]} for d in sources["documents"]],
            "passages": [{k: p[k] for k in ("doc_id", "index", "score")} for p in sources["passages"]],
        }

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        answer = self._answer(messages)
        text = answer.text
        for marker in stop or ():
            text = text.split(marker, 1)[0]
        message = AIMessage(content=text, response_metadata=self._metadata(answer))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        # Generation runs in a thread that hands each new piece of text over a queue, as it is decoded.
        pieces: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["answer"] = self._answer(messages, on_text=pieces.put)
            except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
                outcome["error"] = err
            finally:
                pieces.put(None)

        worker = threading.Thread(target=work, name="lift-chat-stream", daemon=True)
        worker.start()
        held, started = "", False  # whitespace held back: the reply is stripped, as invoke's is
        while (piece := pieces.get()) is not None:
            text = held + piece if started else (held + piece).lstrip()
            piece = text.rstrip()
            held = text[len(piece):]
            if not piece:
                continue
            started = True
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=self._metadata(outcome["answer"])))


__all__ = ["LiftChatModel", "ToolCallingNotSupported", "to_conversation"]
