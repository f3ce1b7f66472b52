"""The router: where an incoming document goes.

    decide ──► index ──► absorb ──► END        (absorb only on the "absorb" route; an unreadable document ends
                    └──────────────► END        at decide with the error in the state)

- **context**: the document fits the answering model's window with room for a question and an answer;
- **absorb**: LIFT trains an adapter, when this machine's measured absorption speed says it takes no longer than
  the time budget (``lift_tool.routing`` decides, ``lift_tool.throughput`` has the estimate and its formula);
- **retrieve**: otherwise, retrieval only, with the reason stated.

The decision uses the document's token count, the model's window, whether the model runs on a CUDA GPU, the
measured throughput and the budget, unless ``route_override`` imposes a route. The decision and its reason are
in the state (``route``, ``reason``, ``log``) and in the log (logger ``lift_tool.router``). Every document is
indexed for retrieval whatever its route. With ``background`` the absorb node starts the training in a thread and
returns at once: the document answers from retrieval ("retrieve" in the registry) until its adapter lands
("absorb"); ``Lift.absorption_status`` tells how it is going, or why it failed.

Input: ``{"source": "<file path or the text>", "title": optional, "route_override": optional}``.
Configuration (``config["configurable"]``): see ``lift_tool.graphs.Configuration`` (lift_home, model, route_override,
budget_seconds, background, measure_throughput, ...).
"""

from __future__ import annotations

import logging
import operator
from dataclasses import asdict
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from lift_tool.errors import LiftError
from lift_tool.graphs import Configuration

_log = logging.getLogger("lift_tool.router")


class RouterInput(TypedDict, total=False):
    source: str  # a file path, or the document's text
    title: str | None  # default: the document's first heading, or the file name
    route_override: str | None  # context | absorb | retrieve for this document; else configurable route_override


class RouterOutput(TypedDict, total=False):
    doc_id: str
    title: str
    tokens: int
    route: str  # context | absorb | retrieve
    reason: str
    estimated_seconds: float | None  # absorption estimate, where one was needed
    status: str  # in context | indexed | absorbed | absorbing | failed | error
    error: str | None
    log: Annotated[list[str], operator.add]


class RouterState(RouterInput, RouterOutput, total=False):
    # Read and decided once, in decide; carried to index and absorb as plain data (a checkpointer stores it).
    document: dict | None  # the Document's fields
    decision: dict | None  # the RouteDecision's fields


def _document(state: RouterState):
    from lift_tool.documents import Document

    return Document(**state["document"])


def _decision(state: RouterState):
    from lift_tool.routing import RouteDecision

    return RouteDecision(**state["decision"])


# On a thread that persists state, an error must not leave an earlier run's decision in place.
_NOTHING_DECIDED = {"doc_id": None, "route": None, "reason": None, "tokens": None, "document": None, "decision": None}


def decide(state: RouterState, config: RunnableConfig) -> dict[str, Any]:
    """Read the document and decide its route."""
    from lift_tool.routing import plan_route, read_source

    configuration = Configuration.from_runnable_config(config)
    if not isinstance(state.get("source"), str) or not state["source"].strip():
        error = "the router needs a `source`: a file path or the document's text"
        return {**_NOTHING_DECIDED, "status": "error", "error": error, "log": [f"error: {error}"]}
    try:
        lift = configuration.lift()
        document = read_source(lift, state["source"], state.get("title"))
        override = state.get("route_override") or configuration.route_override
        decision = plan_route(lift, document, override, configuration.budget_seconds, configuration.measure_throughput)
    except LiftError as err:
        _log.warning("cannot route %s: %s", state["source"][:80], err)
        return {**_NOTHING_DECIDED, "status": "error", "error": str(err), "log": [f"error: {err}"]}
    return {
        "status": "decided",  # replaces the status of an earlier run on the same thread
        "doc_id": document.doc_id,
        "title": document.title,
        "tokens": decision.tokens,
        "route": decision.route,
        "reason": decision.reason,
        "estimated_seconds": decision.estimated_seconds,
        "error": None,
        "document": asdict(document),
        "decision": asdict(decision),
        "log": [f"route {decision.route} for {document.title!r}: {decision.reason}"],
    }


def index(state: RouterState, config: RunnableConfig) -> dict[str, Any]:
    """Index the document for retrieval, whatever its route."""
    from lift_tool.routing import index_routed

    lift = Configuration.from_runnable_config(config).lift()
    status = index_routed(lift, _document(state), _decision(state))
    return {"status": status, "log": [f"indexed {state['title']!r} for retrieval ({state['tokens']:,} tokens)"]}


def absorb(state: RouterState, config: RunnableConfig) -> dict[str, Any]:
    """Absorb the document into an adapter, or start doing so in the background."""
    from lift_tool.routing import absorb_routed

    configuration = Configuration.from_runnable_config(config)
    lift = configuration.lift()
    status, error, _job = absorb_routed(lift, _document(state), _decision(state), configuration.background)
    if status == "failed":
        line = f"absorbing {state['title']!r} failed ({error}): kept for retrieval only"
        return {"status": status, "error": error, "reason": f"{state['reason']}; {line}", "log": [line]}
    line = ("absorbing in the background; retrieval answers until the adapter lands" if status == "absorbing"
            else f"absorbed {state['title']!r} into an adapter")
    return {"status": status, "log": [line]}


def after_decide(state: RouterState) -> str:
    return END if state.get("status") == "error" else "index"


def after_index(state: RouterState) -> str:
    return "absorb" if state.get("route") == "absorb" else END


def build_graph(checkpointer=None):
    """The router, compiled with ``checkpointer`` (none by default: a routing run is one step of work)."""
    builder = StateGraph(RouterState, input_schema=RouterInput, output_schema=RouterOutput)
    builder.add_node("decide", decide)
    builder.add_node("index", index)
    builder.add_node("absorb", absorb)
    builder.add_edge(START, "decide")
    builder.add_conditional_edges("decide", after_decide, ["index", END])
    builder.add_conditional_edges("index", after_index, ["absorb", END])
    builder.add_edge("absorb", END)
    return builder.compile(checkpointer=checkpointer, name="router")


graph = build_graph()
