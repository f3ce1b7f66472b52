"""The training loop, deliberately plain (no Trainer): accumulate gradients over the micro-batches of a step,
clip, set the learning rate, step, report; stop when the micro-batches are done or the time budget is spent.

Logits are computed only at positions that carry loss: a QA conversation has a few dozen answer tokens among
hundreds of prompt tokens, and the output layer is a large share of a small model's compute. On a CPU that
speed-up costs nothing in quality. An example seen before skips the frozen layers below the adapter
(``layer_cache``), exactly. Every few minutes the loop saves its state (``checkpoint``), and it can start from
such a state instead of step 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from lift_tool.errors import BudgetError
from lift_tool.training import checkpoint
from lift_tool.training.distill import TOP_K, distillation_loss
from lift_tool.training.layer_cache import FrozenLayerCache
from lift_tool.training.tasks import IGNORE, Example

if TYPE_CHECKING:
    from lift_tool.config import TrainingSettings


@dataclass
class StepReport:
    """Passed to the progress callback after every optimizer step."""

    step: int
    total_steps: int
    loss: float
    tokens_per_second: float  # training tokens per second of the loop so far
    elapsed: float  # seconds since absorption began (set-up included)
    planned_tokens: int = 0  # training tokens in the whole plan


@dataclass
class LoopResult:
    """What the loop did: steps taken, tokens trained, seconds in the loop, whether the budget ended it, losses;
    with a resumed checkpoint's steps, tokens and seconds included, and the step it resumed at."""

    steps: int
    tokens: int
    seconds: float
    stopped_by_budget: bool
    losses: dict[str, Any]
    resumed_at_step: int = 0
    earlier_seconds: float = 0.0  # seconds of absorption before the checkpoint it resumed from, set-up included


def train(
    model,
    optimizer,
    micro_batches: list[list[Example]],
    total_steps: int,
    training: "TrainingSettings",
    pad_id: int,
    autocast,
    started: float,
    progress: bool = True,
    on_step: Callable[[StepReport], None] | None = None,
    cache: FrozenLayerCache | None = None,
    checkpoints: checkpoint.Checkpoints | None = None,
) -> LoopResult:
    """Run the optimisation over ``micro_batches``, ``training.grad_accum`` of them per step, forward passes inside
    ``autocast``. ``started`` is when absorption began: the time budget counts set-up too.

    ``checkpoints``: save the state every ``every_seconds`` into its folder, and start after the steps of its
    ``resume`` checkpoint (whose weights and optimizer state the caller has restored), counting its seconds."""
    import torch
    from tqdm.auto import tqdm

    budget = training.budget_seconds
    history: list[float] = []
    kind_losses: dict[str, list[float]] = {}
    tokens_done, step, earlier_loop_seconds = 0, 0, 0.0
    resume = checkpoints.resume if checkpoints is not None else None
    if resume is not None:
        step, tokens_done, earlier_loop_seconds = resume.step, resume.tokens, resume.loop_seconds
        history, kind_losses = list(resume.history), {kind: list(v) for kind, v in resume.kind_losses.items()}
        started -= resume.elapsed  # the budget and the schedule count the seconds before the interruption too
    resumed_tokens, train_started = tokens_done, time.monotonic()
    last_saved = train_started
    stopped_by_budget = False
    bar = tqdm(total=total_steps, initial=step, desc="absorbing", unit="step", disable=not progress, leave=False)
    step_seconds = 0.0
    planned_tokens = sum(len(example) for batch in micro_batches for example in batch)
    for first in range(step * training.grad_accum, len(micro_batches), training.grad_accum):
        elapsed = time.monotonic() - started
        if budget is not None and step > 0 and elapsed + step_seconds > budget:
            stopped_by_budget = True
            break
        step_started = time.monotonic()
        group = micro_batches[first : first + training.grad_accum]
        targets_in_step = sum(example.target_tokens for batch in group for example in batch)
        step_loss = 0.0
        for batch in group:
            with autocast:
                loss_sum, per_kind = batch_loss(model, batch, pad_id, cache, training.distill)
            (loss_sum / targets_in_step).backward()  # the step's loss is the mean over all its target tokens
            step_loss += loss_sum.item()
            tokens_done += sum(len(example) for example in batch)
            for kind, value in per_kind.items():
                kind_losses.setdefault(kind, []).append(value)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], training.max_grad_norm)
        rate = learning_rate(training, step, total_steps, time.monotonic() - started, budget)
        for group_params in optimizer.param_groups:
            group_params["lr"] = rate * group_params.get("lr_scale", 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        step_seconds = time.monotonic() - step_started
        mean_loss = step_loss / max(targets_in_step, 1)
        history.append(mean_loss)
        rate = (tokens_done - resumed_tokens) / max(time.monotonic() - train_started, 1e-9)
        bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{rate:.0f}")
        bar.update(1)
        more_to_do = first + training.grad_accum < len(micro_batches)
        if checkpoints is not None and more_to_do and time.monotonic() - last_saved >= checkpoints.every_seconds:
            now = time.monotonic()
            checkpoint.save(checkpoints.folder, checkpoint.capture(
                model, optimizer, checkpoints.key, step, tokens_done, now - started,
                earlier_loop_seconds + now - train_started, history, kind_losses))
            checkpoints.saved_step, last_saved = step, time.monotonic()
        if on_step:
            on_step(StepReport(step, total_steps, mean_loss, rate, time.monotonic() - started, planned_tokens))
        if budget is not None and step == 1 and time.monotonic() - started > budget:
            bar.close()
            raise BudgetError(
                f"a budget of {budget:g} s is too small: one training step took {step_seconds:.1f} s on this "
                f"machine (setup included: {time.monotonic() - started:.1f} s); give a larger --budget-seconds"
            )
    bar.close()
    recent = history[-max(1, len(history) // 10) :]
    losses = {
        "first": round(history[0], 4) if history else None,
        "final": round(sum(recent) / len(recent), 4) if recent else None,
        "final_by_kind": {kind: round(_tail_mean(values), 4) for kind, values in sorted(kind_losses.items())},
    }
    return LoopResult(step, tokens_done, earlier_loop_seconds + time.monotonic() - train_started, stopped_by_budget,
                      losses, resume.step if resume else 0, resume.elapsed if resume else 0.0)


def learning_rate(training: "TrainingSettings", step: int, total_steps: int, elapsed: float,
                  budget: float | None) -> float:
    """Linear warm-up then cosine decay to 10 %. Progress is the larger of steps done and budget spent, so a
    run cut short by its budget still ends with a low learning rate."""
    progress = step / max(total_steps, 1)
    if budget:
        progress = max(progress, elapsed / budget)
    progress = min(progress, 1.0)
    warmup = training.warmup_fraction
    if warmup > 0 and progress < warmup:
        return training.learning_rate * (0.1 + 0.9 * progress / warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * (progress - warmup) / max(1e-9, 1 - warmup)))
    return training.learning_rate * (0.1 + 0.9 * cosine)


def batch_loss(model, batch: list[Example], pad_id: int, cache: FrozenLayerCache | None = None,
               distill: float = 0.0):
    """Summed loss over the labelled positions of a micro-batch, and the mean loss per example kind: the
    cross-entropy, plus ``distill`` times the divergence from the teacher where an answer has its targets.

    Runs the transformer body (through ``cache`` when given), then the output layer only where there is a label.
    """
    import torch
    import torch.nn.functional as F

    device = model.device
    width = max(len(example) for example in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        input_ids[row, : len(example)] = torch.tensor(example.input_ids)
        labels[row, : len(example)] = torch.tensor(example.labels)
        attention[row, : len(example)] = 1
    input_ids, labels, attention = input_ids.to(device), labels.to(device), attention.to(device)

    causal_lm = model.get_base_model()
    if cache is not None:
        hidden = cache.hidden(batch, input_ids, attention)
    else:
        hidden = causal_lm.base_model(input_ids=input_ids, attention_mask=attention).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    log_probs = F.log_softmax(logits, dim=-1)
    token_losses = F.nll_loss(log_probs, targets[keep], reduction="none")
    if distill > 0 and any(example.teacher for example in batch):
        token_losses = token_losses + distill * _teacher_divergence(log_probs, batch, keep.sum(dim=1).tolist())

    per_kind: dict[str, float] = {}
    rows = keep.nonzero()[:, 0]
    for row, example in enumerate(batch):
        mine = token_losses[rows == row]
        if mine.numel():
            per_kind.setdefault(example.kind, mine.mean().item())
    return token_losses.sum(), per_kind


def _teacher_divergence(log_probs, batch: list[Example], targets_per_row: list[int]):
    """Per labelled position (in ``log_probs``' order: row by row), the divergence from the teacher's targets
    where the example has them and the teacher teaches there, 0 elsewhere."""
    import torch

    positions = log_probs.shape[0]
    ids = torch.zeros((positions, TOP_K), dtype=torch.long, device=log_probs.device)
    teacher = torch.zeros((positions, TOP_K), dtype=log_probs.dtype, device=log_probs.device)
    has = torch.zeros(positions, dtype=torch.bool, device=log_probs.device)
    row_start = 0
    for example, count in zip(batch, targets_per_row):
        for first, soft in example.teacher:
            span = slice(row_start + first, row_start + first + len(soft.tokens))
            ids[span], teacher[span], has[span] = soft.ids, soft.logprobs, soft.taught
        row_start += count
    return torch.where(has, distillation_loss(log_probs, ids, teacher), 0.0)


def _tail_mean(values: list[float]) -> float:
    tail = values[-max(1, len(values) // 5) :]
    return sum(tail) / len(tail)
