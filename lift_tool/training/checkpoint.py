"""Resumable absorption: the state of training written to a folder every few minutes, so that an absorption that
is interrupted (Ctrl-C, a killed process, a cancelled job, a power cut) goes on where it stopped when the same
document is absorbed again, instead of starting over. A long document on a CPU takes hours; losing them to an
interruption would make it impossible to absorb whole.

One folder holds one checkpoint, ``checkpoint.safetensors``: the adapter's weights, the optimizer's state and
the random number generators as tensors, and how far the loop had got as JSON in the file's metadata (no pickle).
It is written atomically: a crash leaves the old one or the new one. It belongs to one training plan: its ``key``
is a digest of the base model, the settings, the number format and every example of the plan in order, so it is
used only by the same training, which ends with the same adapter as if nothing had interrupted it. The folder
also keeps the questions the model wrote for the plan (``WRITTEN_FILE``), minutes of work on a long document.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lift_tool.files import write_atomic
from lift_tool.training.tasks import Example

CHECKPOINT_FILE = "checkpoint.safetensors"
WRITTEN_FILE = "written-questions.json"
FORMAT = 1

_log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """The loop's state after ``step`` optimizer steps."""

    key: str
    step: int
    tokens: int  # training tokens done
    elapsed: float  # seconds of absorption until then, set-up included (what a time budget counts)
    loop_seconds: float  # of which in the training loop
    weights: dict[str, Any]  # trainable parameter name -> tensor
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    history: list[float] = field(default_factory=list)  # the loss of every step
    kind_losses: dict[str, list[float]] = field(default_factory=dict)


def plan_key(base_fingerprint: str, settings_fingerprint: str, precision: str, device: str,
             micro_batches: list[list[Example]], grad_accum: int) -> str:
    """What a checkpoint must match to be resumed: the model, the settings, the number format, and the plan."""
    import torch

    digest = hashlib.sha256()
    for part in (base_fingerprint, settings_fingerprint, precision, device.split(":")[0], str(grad_accum)):
        digest.update(part.encode() + b"\0")
    for batch in micro_batches:
        digest.update(b"[")
        for example in batch:
            digest.update(repr((example.kind, example.input_ids, example.labels)).encode())
            for first, soft in example.teacher:
                digest.update(repr((first, soft.tokens)).encode())
                for tensor in (soft.ids, soft.logprobs, soft.taught):  # their bytes, whatever the number format
                    digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        digest.update(b"]")
    return digest.hexdigest()


@dataclass
class Checkpoints:
    """What the loop needs to save checkpoints and to resume from one: the folder, the plan's key, how often to
    save, the checkpoint to resume from (None: from the start), and the step of the last one it saved."""

    folder: Path
    key: str
    every_seconds: float
    resume: Checkpoint | None = None
    saved_step: int | None = None

    def latest_step(self) -> int | None:
        """The step of the newest checkpoint in the folder that this training can go on from, if any."""
        return self.saved_step or (self.resume.step if self.resume is not None else None)


def capture(model, optimizer, key: str, step: int, tokens: int, elapsed: float, loop_seconds: float,
            history: list[float], kind_losses: dict[str, list[float]]) -> Checkpoint:
    """The training state now (after ``step`` steps)."""
    weights = {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}
    return Checkpoint(key, step, tokens, elapsed, loop_seconds, weights, optimizer.state_dict(), random_state(),
                      list(history), {kind: list(values) for kind, values in kind_losses.items()})


def restore(model, optimizer, checkpoint: Checkpoint) -> None:
    """Put the adapter's weights, the optimizer and the random number generators back as ``checkpoint`` has them."""
    import torch

    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(trainable) != set(checkpoint.weights):
        raise ValueError("it holds other weights than the adapter being trained")
    optimizer.load_state_dict(checkpoint.optimizer)  # checks the parameter groups before it changes anything
    with torch.no_grad():
        for name, parameter in trainable.items():
            parameter.copy_(checkpoint.weights[name])
    restore_random_state(checkpoint.rng)


def random_state() -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` into ``folder`` (created if missing), replacing the one there, atomically: its tensors
    as safetensors, the rest as JSON in the file's metadata."""
    from safetensors.torch import save as to_bytes

    tensors = {f"weights.{name}": tensor for name, tensor in checkpoint.weights.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in checkpoint.optimizer["state"].items():
        for name, value in state.items():
            if hasattr(value, "shape"):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    tensors["rng.torch"] = checkpoint.rng["torch"]
    for device, state in enumerate(checkpoint.rng.get("cuda", [])):
        tensors[f"rng.cuda.{device}"] = state
    record = {"format": FORMAT, "key": checkpoint.key, "step": checkpoint.step, "tokens": checkpoint.tokens,
              "elapsed": checkpoint.elapsed, "loop_seconds": checkpoint.loop_seconds, "history": checkpoint.history,
              "kind_losses": checkpoint.kind_losses, "param_groups": checkpoint.optimizer["param_groups"],
              "optimizer_scalars": scalars}
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / CHECKPOINT_FILE, to_bytes(tensors, metadata={"checkpoint": json.dumps(record)}))


def load(folder: Path | None, key: str) -> Checkpoint | None:
    """The checkpoint in ``folder`` when it belongs to the training ``key``; None when there is none, it belongs
    to another training, or it cannot be read (then training starts over, and says so in the log)."""
    from safetensors import safe_open

    path = None if folder is None else folder / CHECKPOINT_FILE
    if path is None or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as stored:
            record = json.loads(stored.metadata()["checkpoint"])
            if record["format"] != FORMAT:
                raise ValueError(f"format {record['format']!r}, not {FORMAT}")
            if record["key"] != key:
                return None
            tensors = {name: stored.get_tensor(name) for name in stored.keys()}
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file: start over, never fail the absorption
        _log.warning("the checkpoint in %s cannot be read (%s): absorbing from the start", folder, err)
        return None
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, part = name.split(".", 2)
            state.setdefault(int(index), {})[part] = tensor
    for index, values in record["optimizer_scalars"].items():
        state.setdefault(int(index), {}).update(values)
    rng: dict[str, Any] = {"torch": tensors["rng.torch"]}
    cuda = sorted((int(name.rsplit(".", 1)[1]), t) for name, t in tensors.items() if name.startswith("rng.cuda."))
    if cuda:
        rng["cuda"] = [t for _, t in cuda]
    weights = {name[len("weights."):]: t for name, t in tensors.items() if name.startswith("weights.")}
    return Checkpoint(key, record["step"], record["tokens"], record["elapsed"], record["loop_seconds"], weights,
                      {"state": state, "param_groups": record["param_groups"]}, rng, record["history"],
                      record["kind_losses"])
