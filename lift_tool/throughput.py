"""How long absorbing a document takes on this machine: the estimate the router (``lift_tool.routing``) weighs
against the time budget.

The cost model: absorbing trains on a number of tokens proportional to the document (every kind of training
example scales with the text), at a rate the machine sets, after a set-up (question generation, building the
examples) that also grows with the text::

    estimated_seconds = document_tokens × (setup_seconds_per_token
                                           + training_tokens_per_document_token / training_tokens_per_second)

The recipe fixes ``training_tokens_per_document_token``; the machine fixes the rate. Both are measured once per
base model fingerprint, device, CPU thread count and training settings, and cached in
``<cache_dir>/throughput.json``: the bundled sample document (about 2,000 tokens) is absorbed with the current
recipe until ``MEASURE_STEPS`` optimizer steps are done, on a private copy of the model. The plan's size gives the
tokens per document token; the loop's rate over those steps, the tokens per second; the time to the first step
less one step's time, the set-up. Where the closed-book chats repeat unchanged (``regroup_questions`` off), the
first steps see every example for the first time and run the frozen layers below the adapter that later passes
skip (``training.layer_cache``): the measured rate is then the slowest part of a run, and the estimate errs long.

It takes a few steps' time (seconds on a GPU, 10-20 s on a 2-core CPU for the default model) and writes
nothing to the memory. A measurement taken on a busy machine is pessimistic: :func:`measure_throughput` measures
again (or delete the cache file). Without a measurement (``measure=False``) a prior is used
(``PRIOR_SECONDS_PER_TOKEN``, CPU or CUDA).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lift_tool.files import read_json, write_json

if TYPE_CHECKING:
    from lift_tool.lift import Lift

MEASURE_STEPS = 3
CACHE_FILE = "throughput.json"
# Used only when measuring is turned off: about 100 s for 2,000 tokens on a 2-core CPU (SmolLM2-135M, default
# recipe), and a tenth of that on a CUDA GPU.
PRIOR_SECONDS_PER_TOKEN = {"cpu": 0.05, "cuda": 0.005}

_log = logging.getLogger("lift_tool.router")


@dataclass
class Throughput:
    """An absorption speed: measured on this machine, or the prior for its device."""

    seconds_per_token: float  # absorption seconds per document token, set-up included
    device: str
    measured: bool  # False: the prior for the device
    key: str = ""
    measured_at: float = 0.0
    training_tokens_per_document_token: float | None = None  # the recipe's cost (measured only)
    training_tokens_per_second: float | None = None  # the machine's rate (measured only)

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
    data = read_json(path, default={})
    return data if isinstance(data, dict) else {}


def absorption_throughput(lift: "Lift", measure: bool = True) -> Throughput:
    """This machine's absorption speed for ``lift``'s model and settings: cached, measured once, or the prior."""
    key, device = _cache_key(lift)
    cached = _read_cache(Path(lift.settings.cache_dir) / CACHE_FILE).get(key)
    if isinstance(cached, dict) and isinstance(cached.get("seconds_per_token"), (int, float)):
        return Throughput(float(cached["seconds_per_token"]), device, True, key, float(cached.get("measured_at", 0)),
                          _number(cached.get("training_tokens_per_document_token")),
                          _number(cached.get("training_tokens_per_second")))
    if not measure:
        prior = PRIOR_SECONDS_PER_TOKEN["cuda" if device.startswith("cuda") else "cpu"]
        return Throughput(prior, device, False, key)
    return measure_throughput(lift)


def measure_throughput(lift: "Lift") -> Throughput:
    """Time a few steps of absorbing the bundled sample on a private copy of the model, and cache the result."""
    import tempfile

    from lift_tool.sample import sample_document_path
    from lift_tool.training.absorb import absorb

    key, device = _cache_key(lift)
    sample = lift.read(sample_document_path())
    sample_tokens = lift.count_tokens(sample.text)
    reports = []

    def time_step(report) -> None:
        reports.append(report)
        if len(reports) >= MEASURE_STEPS:
            raise _StopMeasuring

    _log.info("measuring absorption speed on %s (once; cached in %s)", device, lift.settings.cache_dir)
    private = lift.model_copy()  # the shared model keeps answering meanwhile
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lift-throughput-") as scratch:
        try:
            absorb(sample, private, lift.settings, Path(scratch) / "adapter", progress=False, on_step=time_step)
        except _StopMeasuring:
            pass
    del private
    if not reports:  # nothing to train on: the whole run was set-up
        seconds = time.monotonic() - started
        result = Throughput(max(seconds, 1e-6) / sample_tokens, device, True, key, time.time())
    else:
        last = reports[-1]
        rate = max(last.tokens_per_second, 1e-9)
        step_seconds = (last.elapsed - reports[0].elapsed) / (len(reports) - 1) if len(reports) > 1 else 0.0
        setup = max(reports[0].elapsed - step_seconds, 0.0)
        ratio = last.planned_tokens / sample_tokens
        result = Throughput(setup / sample_tokens + ratio / rate, device, True, key, time.time(),
                            round(ratio, 2), round(rate, 1))
    _write_cache(Path(lift.settings.cache_dir) / CACHE_FILE, key, result)
    _log.info("absorption speed: %.1f ms per document token on %s", result.seconds_per_token * 1000, device)
    return result


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _write_cache(path: Path, key: str, result: Throughput) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read_cache(path)
    kept = ("seconds_per_token", "device", "measured_at", "training_tokens_per_document_token",
            "training_tokens_per_second")
    data[key] = {k: v for k, v in asdict(result).items() if k in kept}
    write_json(path, data)


__all__ = ["CACHE_FILE", "PRIOR_SECONDS_PER_TOKEN", "Throughput", "absorption_throughput", "measure_throughput"]
