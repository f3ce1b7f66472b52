"""LangGraph graphs over lift-tool's memory, one per module, each exposing a compiled ``graph`` (registered in
langgraph.json) and ``build_graph(...)`` for a custom checkpointer:

- ``lift_tool.graphs.router``: where a new document goes (in context, absorbed, or retrieval only);
- ``lift_tool.graphs.doc_qa``: a long question-and-answer session, persisted by a checkpointer;
- ``lift_tool.graphs.research_assistant``: ingest a folder, plan sub-questions, answer them from memory, write a
  report (usable as a subgraph: a node of a larger graph);
- ``lift_tool.graphs.memory``: remember notes in the graph's store (``LiftStore``) and answer from them.

Each declares :class:`Configuration` as its context schema: ``graph.invoke(input, context={"budget_seconds":
60})``; ``config["configurable"]`` is read when no context is given, as before. States are
``typing_extensions.TypedDict``, so input and output schemas load on Python 3.10-3.13. Absorption progress is
streamed to ``stream_mode="custom"`` (see ``lift_tool.graphs.progress``). Nodes in one process share one
``Lift`` per settings, so the model is loaded once. Nothing in lift_tool or memory imports this package.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lift_tool.answering import Mode
from lift_tool.routing import DEFAULT_BUDGET_SECONDS

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.runtime import Runtime

    from lift_tool.config import Settings
    from lift_tool.lift import Lift


@dataclass(kw_only=True)
class Configuration:
    """The graphs' context schema (also read from ``config["configurable"]``); every key is optional."""

    lift_home: str | None = None  # the memory folder (default: $LIFT_HOME or the user data folder)
    model: str | None = None  # the answering model (default: $LIFT_MODEL or smollm2-135m)
    device: str | None = None  # auto, cpu, cuda, cuda:N
    settings: dict[str, Any] | None = None  # any other lift-tool setting, e.g. {"training": {"epochs": 1}}
    route_override: str | None = None  # context | absorb | retrieve: impose the route instead of deciding it
    budget_seconds: float | None = DEFAULT_BUDGET_SECONDS  # longest acceptable absorption; None: no limit
    background: bool = False  # absorb in a thread: the graph returns at once, the adapter lands later
    measure_throughput: bool = True  # False: estimate absorption time from a prior, without measuring once
    mode: Mode = "auto"  # how questions are answered (see Lift.ask)
    conversation_tokens: int | None = None  # doc_qa: absorb the conversation past this size (default: half the window)
    approve_over_seconds: float | None = None  # router: ask a person (interrupt) before an absorption longer than this
    chat_model: str | None = None  # research assistant: "provider:model" (init_chat_model) to plan and write
    max_sub_questions: int = 3  # research assistant
    user_id: str = "default"  # memory graph: whose notes (the store namespace ("memories", user_id))

    @classmethod
    def from_runnable_config(cls, config: "RunnableConfig | None" = None) -> "Configuration":
        configurable = (config or {}).get("configurable") or {}
        names = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in configurable.items() if name in names})

    @classmethod
    def of(cls, runtime: "Runtime | None", config: "RunnableConfig | None" = None) -> "Configuration":
        """A node's configuration: the run's context (``invoke(..., context=...)``), else ``configurable``."""
        context = getattr(runtime, "context", None)
        if isinstance(context, cls):
            return context
        if isinstance(context, dict):  # a parent graph's context given as a dict
            names = {field.name for field in fields(cls)}
            return cls(**{name: value for name, value in context.items() if name in names})
        return cls.from_runnable_config(config)

    def lift_settings(self) -> "Settings":
        from lift_tool.config import load_settings

        overrides = dict(self.settings or {})
        for name, value in (("home", self.lift_home), ("model", self.model), ("device", self.device)):
            if value is not None:
                overrides[name] = Path(value) if name == "home" else value
        return load_settings(**overrides)

    def lift(self) -> "Lift":
        """The process's shared Lift for these settings (the model loads once, on first use)."""
        from lift_tool.lift import shared_lift

        return shared_lift(self.lift_settings())


__all__ = ["Configuration"]
