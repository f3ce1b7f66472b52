"""Where a new document goes: the routing decision, and storing a document along its route.

A new document goes one of three ways (``ROUTES``):

- ``context``: it fits the answering model's window with room for a question and an answer; it is passed whole;
- ``absorb``: LIFT trains an adapter on it, if that takes no longer than the time budget (the estimate comes from
  this machine's measured absorption speed, ``lift_tool.throughput``);
- ``retrieve``: otherwise; its chunks are retrieved per question.

Every document is indexed for retrieval whatever its route. The LangChain tool ``lift_absorb`` and the router
graph both route through here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from lift_tool.documents import DOCUMENT_SUFFIXES, confine
from lift_tool.errors import ConfigError, InputError, LiftError
from lift_tool.throughput import absorption_throughput

if TYPE_CHECKING:
    from lift_tool.documents import Document
    from lift_tool.jobs import AbsorptionJob
    from lift_tool.lift import Lift
    from lift_tool.training.loop import StepReport

ROUTES = ("context", "absorb", "retrieve")
ANSWER_ROOM_TOKENS = 256  # prompt wording and the question, besides the answer itself (max_new_tokens)
DEFAULT_BUDGET_SECONDS = 600.0  # the longest absorption accepted by default

_log = logging.getLogger("lift_tool.router")


@dataclass
class RouteDecision:
    """A document's route and why, with what the decision was made from."""

    route: str  # context | absorb | retrieve
    reason: str
    tokens: int
    window: int
    gpu: bool
    estimated_seconds: float | None = None  # absorption estimate, where one was needed
    budget_seconds: float | None = None


def decide_route(
    tokens: int,
    window: int,
    answer_room: int,
    gpu: bool,
    seconds_per_token: float | None,
    budget_seconds: float | None,
    override: str | None = None,
) -> RouteDecision:
    """The route for a document of ``tokens`` tokens (pure: every input is given). ``seconds_per_token`` may be
    None when the document fits the window or a route is imposed (no estimate is needed then)."""
    device = "GPU" if gpu else "CPU"
    decision = RouteDecision("", "", tokens, window, gpu, budget_seconds=budget_seconds)
    if override:
        if override not in ROUTES:
            raise ConfigError(f"unknown route {override!r}: use one of {', '.join(ROUTES)}")
        decision.route = override
        decision.reason = f"route {override!r} was asked for (override)"
        if override == "context" and tokens + answer_room > window:
            decision.reason += f"; the {tokens:,}-token document is cut to fit the {window:,}-token window"
        if override == "absorb" and budget_seconds:
            decision.reason += f"; training stops at the {budget_seconds:g} s budget"
        return decision
    if tokens + answer_room <= window:
        decision.route = "context"
        decision.reason = (f"{tokens:,} tokens fit the {window:,}-token window with room for a question and an "
                           "answer: passed whole, no training needed")
        return decision
    if seconds_per_token is None:
        raise ValueError("seconds_per_token is needed for a document that does not fit the window")
    estimate = seconds_per_token * tokens
    decision.estimated_seconds = estimate
    too_long = f"{tokens:,} tokens do not fit the {window:,}-token window"
    speed = f"about {estimate:,.0f} s on this {device} ({seconds_per_token * 1000:.1f} ms per token)"
    if budget_seconds is None or estimate <= budget_seconds:
        decision.route = "absorb"
        budget = f"within the {budget_seconds:g} s budget" if budget_seconds else "no time budget set"
        decision.reason = f"{too_long}; absorbing takes {speed}, {budget}"
    else:
        decision.route = "retrieve"
        decision.reason = (f"{too_long}; absorbing would take {speed}, over the {budget_seconds:g} s budget: "
                           "retrieval only")
    return decision


def plan_route(
    lift: "Lift",
    document: "Document",
    override: str | None = None,
    budget_seconds: float | None = DEFAULT_BUDGET_SECONDS,
    measure: bool = True,
) -> RouteDecision:
    """Decide where ``document`` goes with ``lift``'s model, window, device and measured speed."""
    loaded = lift.loaded
    tokens = lift.count_tokens(document.text)
    window = lift.context_window
    gpu = str(loaded.device).startswith("cuda")
    known = lift.registry.get_document(document.doc_id)
    if not override and known is not None and any(a.base_fingerprint == loaded.fingerprint for a in known.adapters):
        return RouteDecision("absorb", "already absorbed for this model: its adapter is reused", tokens, window, gpu,
                             budget_seconds=budget_seconds)
    answer_room = ANSWER_ROOM_TOKENS + lift.settings.max_new_tokens
    seconds_per_token = None
    if not override and tokens + answer_room > window:
        seconds_per_token = absorption_throughput(lift, measure).seconds_per_token
    decision = decide_route(tokens, window, answer_room, gpu, seconds_per_token, budget_seconds, override)
    _log.info("route %s for %r: %s", decision.route, document.title, decision.reason)
    return decision


@dataclass
class RoutedDocument:
    """A document stored along its route: how it went."""

    doc_id: str
    title: str
    route: str
    reason: str
    status: str  # "in context" | "indexed" | "absorbed" | "absorbing" | "failed"
    tokens: int
    estimated_seconds: float | None = None
    seconds: float = 0.0
    error: str | None = None
    job: "AbsorptionJob | None" = None


def index_routed(lift: "Lift", document: "Document", decision: RouteDecision) -> str:
    """Index ``document`` for retrieval with its route; returns its status. A document to absorb is listed as
    "retrieve" until its adapter lands, and one that already has an adapter keeps its route."""
    known = lift.registry.get_document(document.doc_id)
    keep_route = known is not None and bool(known.adapters)
    route = "retrieve" if decision.route == "absorb" else decision.route
    lift.index(document, route=None if keep_route else route)
    return {"context": "in context", "retrieve": "indexed", "absorb": "indexed"}[decision.route]


def absorb_routed(lift: "Lift", document: "Document", decision: RouteDecision, background: bool = False,
                  on_step: "Callable[[StepReport], None] | None" = None) -> tuple[str, str | None, "AbsorptionJob | None"]:
    """Absorb ``document`` (now, or in a background thread); returns (status, error, job). ``on_step``: called
    after every training step of an absorption done now (the graphs stream it).

    A failed absorption leaves the document indexed for retrieval only, with the error returned.
    """
    if background:
        return "absorbing", None, lift.absorb_in_background(document, budget_seconds=decision.budget_seconds)
    try:
        lift.absorb(document, budget_seconds=decision.budget_seconds, progress=False, on_step=on_step)
    except Exception as err:  # noqa: BLE001 - whatever it was, the document stays retrieval-only
        error = str(err) if isinstance(err, LiftError) else f"{type(err).__name__}: {err}"
        _log.warning("absorbing %r failed: %s", document.title, error)
        return "failed", error, None
    return "absorbed", None, None


def store_routed(
    lift: "Lift",
    document: "Document",
    decision: RouteDecision,
    background: bool = False,
) -> RoutedDocument:
    """Index ``document`` for retrieval and, on the absorb route, absorb it (now, or in the background)."""
    started = time.monotonic()
    routed = RoutedDocument(document.doc_id, document.title, decision.route, decision.reason, "", decision.tokens,
                            decision.estimated_seconds)
    routed.status = index_routed(lift, document, decision)
    if decision.route == "absorb":
        routed.status, routed.error, routed.job = absorb_routed(lift, document, decision, background)
        if routed.error:
            routed.reason += f"; absorption failed ({routed.error}), so it is kept for retrieval only"
    routed.seconds = time.monotonic() - started
    return routed


def read_source(lift: "Lift", source, title: str | None = None) -> "Document":
    """``Lift.read`` for a source an agent gave, so confined to ``settings.allowed_roots``, except that a string
    that looks like a file path but names no file is an error rather than a one-line document (a mistyped path
    would otherwise be stored as text). A path outside the allowed folders is refused whether it exists or not."""
    if isinstance(source, str) and "\n" not in source.strip() and len(source) < 4096:
        candidate = source.strip()
        looks_like_path = (candidate.startswith(("/", "./", "../", "~"))
                           or candidate.lower().endswith(tuple(DOCUMENT_SUFFIXES)))
        try:
            if looks_like_path:
                confine(candidate, lift.settings.allowed_roots)
            missing = looks_like_path and not Path(candidate).expanduser().exists()
        except OSError:  # a name the filesystem cannot hold (over 255 bytes, say) is text, as Lift.read takes it
            missing = False
        if missing:
            raise InputError(f"file not found: {candidate} (to store a text instead, pass the text itself)")
    return lift.read(source, title, confined=True)


__all__ = ["ANSWER_ROOM_TOKENS", "DEFAULT_BUDGET_SECONDS", "ROUTES", "RouteDecision", "RoutedDocument", "absorb_routed",
           "decide_route", "index_routed", "plan_route", "read_source", "store_routed"]
