"""``ScriptedChatModel``: a tool-calling chat model that replies from a script.

It stands in for a real tool-calling model where none is available (tests, and the examples when run offline):
the local answering model cannot emit tool calls, so an agent's tool choice is scripted instead, step by step.
``tool_call``, ``ask_tool`` and ``reply_with_tool_result`` write the usual steps.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr


class ScriptedChatModel(BaseChatModel):
    """A tool-calling chat model that replies from a script, for tests and offline examples.

    Each call takes the next step: an ``AIMessage`` (possibly with tool calls), a string, or a function of the
    messages so far that returns one of those. ``bind_tools`` accepts the tools and remembers their names; a
    step that calls a tool not bound is an error, as is running past the end of the script.
    """

    script: list[Any]
    _position: int = PrivateAttr(default=0)
    _bound: list[str] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def calls(self) -> int:
        """How many replies it has given."""
        return self._position

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> "ScriptedChatModel":
        from langchain_core.utils.function_calling import convert_to_openai_tool

        self._bound = [convert_to_openai_tool(tool)["function"]["name"] for tool in tools]
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        if self._position >= len(self.script):
            raise ValueError(f"the script has only {len(self.script)} steps; the model was called once more")
        step = self.script[self._position]
        self._position += 1
        reply = step(list(messages)) if callable(step) else step
        message = AIMessage(content=reply) if isinstance(reply, str) else reply
        unknown = [call["name"] for call in message.tool_calls if self._bound and call["name"] not in self._bound]
        if unknown:
            raise ValueError(f"the script calls {unknown}, which are not among the bound tools {self._bound}")
        return ChatResult(generations=[ChatGeneration(message=message)])


_call_ids = itertools.count(1)


def tool_call(name: str, **args: Any) -> AIMessage:
    """An AI message that calls one tool (``args`` as given, right or wrong)."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{next(_call_ids)}", "type": "tool_call"}])


def ask_tool(name: str, argument: str = "question") -> Callable[[list[BaseMessage]], AIMessage]:
    """A script step that calls ``name`` with the user's last message as ``argument``."""

    def step(messages: list[BaseMessage]) -> AIMessage:
        question = next(m.text for m in reversed(messages) if isinstance(m, HumanMessage))
        return tool_call(name, **{argument: question})

    return step


def reply_with_tool_result(messages: list[BaseMessage]) -> str:
    """A script step that answers with the last tool result, as an agent relaying it would."""
    return next(m.text for m in reversed(messages) if isinstance(m, ToolMessage))


__all__ = ["ScriptedChatModel", "ask_tool", "reply_with_tool_result", "tool_call"]
