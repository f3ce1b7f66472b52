"""The router: where an incoming document goes.

    decide ──► index ──► (approve) ──► absorb ──► END   (absorb only on the "absorb" route; approve only when
                    └─────────────────────────────► END   asked for; an unreadable document ends at decide)

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

An absorption done in the run streams its progress to ``stream_mode="custom"`` (``lift_tool.graphs.progress``).
With ``approve_over_seconds`` set, an absorption estimated to take longer (or of unknown length) first
interrupts the run (``langgraph.types.interrupt``; the graph needs a checkpointer) with what it would cost; resume
with ``Command(resume=True)`` to absorb, anything else to keep the document for retrieval only. The document is
indexed before the question, so it answers from retrieval meanwhile.

Input: ``{"source": "<file path or the text>", "title": optional, "route_override": optional}``.
Context (or ``config["configurable"]``): see ``lift_tool.graphs.Configuration`` (lift_home, model, route_override,
budget_seconds, background, measure_throughput, approve_over_seconds, ...).
"""

from __future__ import annotations

import logging
import operator
from dataclasses import asdict
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from typing_extensions import TypedDict

from lift_tool.errors import LiftError
from lift_tool.graphs import Configuration
from lift_tool.graphs.progress import absorb_end, absorb_start, step_writer

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
    approved: bool | None  # the person's answer, where approve_over_seconds asked for one


def _document(state: RouterState):
    from lift_tool.documents import Document

    return Document(**state["document"])


def _decision(state: RouterState):
    from lift_tool.routing import RouteDecision

    return RouteDecision(**state["decision"])


# On a thread that persists state, an error must not leave an earlier run's decision in place.
_NOTHING_DECIDED = {"doc_id": None, "route": None, "reason": None, "tokens": None, "document": None, "decision": None,
                    "approved": None}


def decide(state: RouterState, config: RunnableConfig, runtime: Runtime[Configuration]) -> dict[str, Any]:
    """Read the document and decide its route."""
    from lift_tool.routing import plan_route, read_source

    configuration = Configuration.of(runtime, config)
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
        "approved": None,
        "log": [f"route {decision.route} for {document.title!r}: {decision.reason}"],
    }


def index(state: RouterState, config: RunnableConfig, runtime: Runtime[Configuration]) -> dict[str, Any]:
    """Index the document for retrieval, whatever its route."""
    from lift_tool.routing import index_routed

    lift = Configuration.of(runtime, config).lift()
    status = index_routed(lift, _document(state), _decision(state))
    return {"status": status, "log": [f"indexed {state['title']!r} for retrieval ({state['tokens']:,} tokens)"]}


def approve(state: RouterState) -> dict[str, Any]:
    """Ask a person whether to absorb (an interrupt); without a yes the document stays retrieval-only."""
    estimate = state.get("estimated_seconds")
    cost = f"about {estimate:,.0f} s of training" if estimate is not None else "training of unknown length"
    answer = interrupt({
        "question": f"Absorb {state['title']!r} ({state['tokens']:,} tokens) into an adapter? It takes {cost}. "
                    "Resume with true to absorb; anything else keeps it for retrieval only.",
        "doc_id": state["doc_id"], "title": state["title"], "tokens": state["tokens"],
        "estimated_seconds": estimate, "reason": state["reason"],
    })
    if _is_yes(answer):
        return {"approved": True, "log": [f"absorbing {state['title']!r} was approved"]}
    line = f"absorbing {state['title']!r} was declined: kept for retrieval only"
    return {"approved": False, "route": "retrieve", "status": "indexed", "reason": f"{state['reason']}; {line}",
            "log": [line]}


def _is_yes(answer: Any) -> bool:
    if isinstance(answer, dict):
        answer = answer.get("approve", answer.get("approved"))
    if isinstance(answer, str):
        return answer.strip().lower() in ("y", "yes", "true", "approve", "approved", "ok")
    return answer is True


def absorb(state: RouterState, config: RunnableConfig, runtime: Runtime[Configuration]) -> dict[str, Any]:
    """Absorb the document into an adapter (its progress streamed), or start doing so in the background."""
    from lift_tool.routing import absorb_routed

    configuration = Configuration.of(runtime, config)
    lift = configuration.lift()
    write = runtime.stream_writer
    absorb_start(write, state["doc_id"], state["title"], state.get("tokens"), state.get("estimated_seconds"))
    status, error, _job = absorb_routed(lift, _document(state), _decision(state), configuration.background,
                                        on_step=step_writer(write, state["doc_id"]))
    absorb_end(write, state["doc_id"], status, error)
    if status == "failed":
        line = f"absorbing {state['title']!r} failed ({error}): kept for retrieval only"
        return {"status": status, "error": error, "reason": f"{state['reason']}; {line}", "log": [line]}
    line = ("absorbing in the background; retrieval answers until the adapter lands" if status == "absorbing"
            else f"absorbed {state['title']!r} into an adapter")
    return {"status": status, "log": [line]}


def after_decide(state: RouterState) -> str:
    return END if state.get("status") == "error" else "index"


def after_index(state: RouterState, config: RunnableConfig, runtime: Runtime[Configuration]) -> str:
    if state.get("route") != "absorb":
        return END
    limit = Configuration.of(runtime, config).approve_over_seconds
    if limit is None or state["decision"]["reason"].startswith("already absorbed"):  # reused, not trained
        return "absorb"
    estimate = state.get("estimated_seconds")
    return "approve" if estimate is None or estimate > limit else "absorb"


def after_approve(state: RouterState) -> str:
    return "absorb" if state.get("approved") else END


def build_graph(checkpointer=None):
    """The router, compiled with ``checkpointer`` (none by default: a routing run is one step of work; an
    approval, ``approve_over_seconds``, needs one)."""
    builder = StateGraph(RouterState, input_schema=RouterInput, output_schema=RouterOutput,
                         context_schema=Configuration)
    builder.add_node("decide", decide)
    builder.add_node("index", index)
    builder.add_node("approve", approve)
    builder.add_node("absorb", absorb)
    builder.add_edge(START, "decide")
    builder.add_conditional_edges("decide", after_decide, ["index", END])
    builder.add_conditional_edges("index", after_index, ["approve", "absorb", END])
    builder.add_conditional_edges("approve", after_approve, ["absorb", END])
    builder.add_edge("absorb", END)
    return builder.compile(checkpointer=checkpointer, name="router")


graph = build_graph()
