"""How long absorbing a document takes on this machine, and the routing decision that depends on it.

A new document goes one of three ways (``ROUTES``):

- ``context``: it fits the answering model's window with room for a question and an answer; it is passed whole;
- ``absorb``: LIFT trains an adapter on it, if that takes no longer than the time budget;
- ``retrieve``: otherwise; its chunks are retrieved per question.

Every document is indexed for retrieval whatever its route.

The absorption estimate is linear in the document's tokens (every kind of training example scales with the text,
so the default recipe's time does too)::

    estimated_seconds = seconds_per_token × document_tokens

``seconds_per_token`` is measured once per base model fingerprint, device, CPU thread count and training
settings, and cached in ``<cache_dir>/throughput.json``. The measurement absorbs the bundled sample document
(about 2,000 tokens) with the current recipe and stops after ``MEASURE_STEPS`` optimizer steps. From the
elapsed times t1..tn at those steps (t1 includes the setup: question generation, building the examples) and the
number of steps the whole run would take, T:

    per_step = (tn − t1) / (n − 1);   setup = t1 − per_step
    seconds_per_token = (setup + per_step × T) / sample_tokens

It takes a few steps' time (seconds on a GPU, 10-20 s on a 2-core CPU for the default model) and writes
nothing to the memory. A measurement taken on a busy machine is pessimistic: :func:`measure_throughput` measures
again (or delete the cache file). Without a measurement (``measure=False``) a prior is used
(``PRIOR_SECONDS_PER_TOKEN``, CPU or CUDA).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lift_tool.errors import ConfigError, LiftError

if TYPE_CHECKING:
    from lift_tool.documents import Document
    from lift_tool.lift import AbsorptionJob, Lift

ROUTES = ("context", "absorb", "retrieve")
MEASURE_STEPS = 3
CACHE_FILE = "throughput.json"
# Used only when measuring is turned off: about 100 s for 2,000 tokens on a 2-core CPU (SmolLM2-135M, default
# recipe), and a tenth of that on a CUDA GPU.
PRIOR_SECONDS_PER_TOKEN = {"cpu": 0.05, "cuda": 0.005}
ANSWER_ROOM_TOKENS = 256  # prompt wording and the question, besides the answer itself (max_new_tokens)
DEFAULT_BUDGET_SECONDS = 600.0

_log = logging.getLogger("lift_tool.router")


@dataclass
class Throughput:
    seconds_per_token: float  # absorption seconds per document token
    device: str
    measured: bool  # False: the prior for the device
    key: str = ""
    measured_at: float = 0.0

    def estimate(self, tokens: int) -> float:
        return self.seconds_per_token * tokens


class _StopMeasuring(Exception):
    """Raised from the step callback once enough steps have been timed."""


def _cache_key(lift: "Lift") -> tuple[str, str]:
    import torch

    loaded = lift.loaded
    device = str(loaded.device)
    threads = torch.get_num_threads() if device == "cpu" else 0
    return f"{loaded.fingerprint}|{device}|threads={threads}|{lift.settings.training_fingerprint()}", device


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def absorption_throughput(lift: "Lift", measure: bool = True) -> Throughput:
    """This machine's absorption speed for ``lift``'s model and settings: cached, measured once, or the prior."""
    key, device = _cache_key(lift)
    cached = _read_cache(Path(lift.settings.cache_dir) / CACHE_FILE).get(key)
    if isinstance(cached, dict) and isinstance(cached.get("seconds_per_token"), (int, float)):
        return Throughput(float(cached["seconds_per_token"]), device, True, key, float(cached.get("measured_at", 0)))
    if not measure:
        prior = PRIOR_SECONDS_PER_TOKEN["cuda" if device.startswith("cuda") else "cpu"]
        return Throughput(prior, device, False, key)
    return measure_throughput(lift)


def measure_throughput(lift: "Lift") -> Throughput:
    """Time a few steps of absorbing the bundled sample on a private copy of the model, and cache the result."""
    import tempfile

    from lift_tool.absorb import absorb
    from lift_tool.demo import sample_document_path

    key, device = _cache_key(lift)
    sample = lift.read(sample_document_path())
    sample_tokens = lift.count_tokens(sample.text)
    elapsed: list[float] = []
    total_steps = 0

    def time_step(report) -> None:
        nonlocal total_steps
        elapsed.append(report.elapsed)
        total_steps = report.total_steps
        if len(elapsed) >= MEASURE_STEPS:
            raise _StopMeasuring

    _log.info("measuring absorption speed on %s (once; cached in %s)", device, lift.settings.cache_dir)
    private = lift.model_copy()  # the shared model keeps answering meanwhile
    with tempfile.TemporaryDirectory(prefix="lift-throughput-") as scratch:
        try:
            absorb(sample, private, lift.settings, Path(scratch) / "adapter", progress=False, on_step=time_step)
        except _StopMeasuring:
            pass
    del private
    if len(elapsed) >= 2:
        per_step = (elapsed[-1] - elapsed[0]) / (len(elapsed) - 1)
        full_run = max(elapsed[0] - per_step, 0.0) + per_step * total_steps
    else:  # the whole sample took fewer steps than we time: the run itself is the measurement
        full_run = elapsed[-1] if elapsed else 0.0
    result = Throughput(max(full_run, 1e-6) / sample_tokens, device, True, key, time.time())
    _write_cache(Path(lift.settings.cache_dir) / CACHE_FILE, key, result)
    _log.info("absorption speed: %.1f ms per document token on %s", result.seconds_per_token * 1000, device)
    return result


def _write_cache(path: Path, key: str, result: Throughput) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read_cache(path)
    data[key] = {k: v for k, v in asdict(result).items() if k in ("seconds_per_token", "device", "measured_at")}
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data, indent=1))
    os.replace(temp, path)


# ---------------------------------------------------------------------------------------------- the decision


@dataclass
class RouteDecision:
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


def absorb_routed(lift: "Lift", document: "Document", decision: RouteDecision, background: bool = False
                  ) -> tuple[str, str | None, "AbsorptionJob | None"]:
    """Absorb ``document`` (now, or in a background thread); returns (status, error, job).

    A failed absorption leaves the document indexed for retrieval only, with the error returned.
    """
    if background:
        return "absorbing", None, lift.absorb_in_background(document, budget_seconds=decision.budget_seconds)
    try:
        lift.absorb(document, budget_seconds=decision.budget_seconds, progress=False)
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


PATH_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".rst", ".pdf", ".html", ".htm")


def read_source(lift: "Lift", source, title: str | None = None) -> "Document":
    """``Lift.read``, except that a string that looks like a file path but names no file is an error rather than
    a one-line document (a mistyped path would otherwise be stored as text)."""
    from lift_tool.errors import InputError

    if isinstance(source, str) and "\n" not in source.strip() and len(source) < 4096:
        candidate = source.strip()
        looks_like_path = candidate.startswith(("/", "./", "../", "~")) or candidate.lower().endswith(PATH_SUFFIXES)
        if looks_like_path and not Path(candidate).expanduser().exists():
            raise InputError(f"file not found: {candidate} (to store a text instead, pass the text itself)")
    return lift.read(source, title)
