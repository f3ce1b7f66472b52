"""Absorption progress as LangGraph custom stream events, so that a client sees a long absorption move.

    for mode, event in graph.stream(input, stream_mode=["custom", "values"]):
        if mode == "custom" and event["event"] == "absorb_step":
            print(f"{event['step']}/{event['total_steps']} loss {event['loss']:.3f}")

Events: ``absorb_start`` (doc_id, title, tokens, estimated_seconds), ``absorb_step`` (doc_id, step, total_steps,
loss, tokens_per_second, elapsed) after every training step, ``absorb_end`` (doc_id, status, error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from lift_tool.training.loop import StepReport

Writer = Callable[[Any], None]


def absorb_start(write: Writer, doc_id: str, title: str, tokens: int | None, estimated_seconds: float | None) -> None:
    write({"event": "absorb_start", "doc_id": doc_id, "title": title, "tokens": tokens,
           "estimated_seconds": estimated_seconds})


def step_writer(write: Writer, doc_id: str) -> "Callable[[StepReport], None]":
    """An ``on_step`` callback for ``Lift.absorb`` that streams each training step."""

    def on_step(report: "StepReport") -> None:
        write({"event": "absorb_step", "doc_id": doc_id, "step": report.step, "total_steps": report.total_steps,
               "loss": report.loss, "tokens_per_second": report.tokens_per_second, "elapsed": report.elapsed})

    return on_step


def absorb_end(write: Writer, doc_id: str, status: str, error: str | None = None) -> None:
    write({"event": "absorb_end", "doc_id": doc_id, "status": status, "error": error})


__all__ = ["absorb_end", "absorb_start", "step_writer"]
