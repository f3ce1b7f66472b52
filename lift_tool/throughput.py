"""How long absorbing a document takes on this machine: the estimate the router (``lift_tool.routing``) weighs
against the time budget.

The estimate is linear in the document's tokens (every kind of training example scales with the text, so the
default recipe's time does too)::

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
    data = read_json(path, default={})
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

    from lift_tool.sample import sample_document_path
    from lift_tool.training.absorb import absorb

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
    write_json(path, data)


__all__ = ["CACHE_FILE", "PRIOR_SECONDS_PER_TOKEN", "Throughput", "absorption_throughput", "measure_throughput"]
