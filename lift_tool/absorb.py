"""Absorption: train a LoRA adapter on one document (LIFT).

The loop is deliberately plain (no Trainer): build the epoch's examples, cut them into length-grouped
micro-batches, accumulate gradients, step, repeat until the epochs are done or the time budget is spent.

Two speed-ups matter on a CPU and cost nothing in quality:
- logits are computed only at positions that carry loss (a QA conversation has a few dozen answer tokens among
  hundreds of prompt tokens, and the output layer is a large share of a small model's compute);
- bf16 autocast where the processor supports it (about twice the fp32 throughput on AVX-512 machines), with
  fp32 master weights.

Backends: ``peft`` everywhere; ``unsloth`` on CUDA when installed (``lift_tool.unsloth_backend``).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from lift_tool import __version__
from lift_tool.config import Settings
from lift_tool.documents import Document
from lift_tool.errors import AbsorptionInterrupted, BudgetError, ConfigError, InputError
from lift_tool.models import LoadedModel, cpu_has_bf16_kernels
from lift_tool.questions import QAPair, RuleQuestionGenerator, limit_repeated_answers, unanswerable_questions
from lift_tool.tasks import IGNORE, Example, TaskBuilder, batches

MANIFEST_FILE = "lift_manifest.json"
MANIFEST_FORMAT = 1


@dataclass
class StepReport:
    """Passed to the progress callback after every optimizer step."""

    step: int
    total_steps: int
    loss: float
    tokens_per_second: float
    elapsed: float


# ------------------------------------------------------------------------------------------------- backends


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def unsloth_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("unsloth") is not None


def choose_backend(requested: str, device: str, reloadable: bool = True) -> str:
    """``auto`` picks Unsloth on a CUDA device when it is installed and the model has a folder to reload from
    (Unsloth loads its own copy), PEFT otherwise."""
    on_cuda = device.startswith("cuda")
    if requested == "peft":
        return "peft"
    if requested == "unsloth":
        if not on_cuda:
            raise ConfigError("the unsloth backend needs a CUDA GPU; use --backend peft (or auto) on this machine")
        if not unsloth_installed():
            raise ConfigError("the unsloth backend is not installed: pip install 'lift-tool[gpu]'")
        return "unsloth"
    return "unsloth" if on_cuda and reloadable and unsloth_installed() else "peft"


class PeftBackend:
    """Plain PEFT: LoRA layers injected into the live model, removed again after training."""

    name = "peft"

    def attach(self, loaded: LoadedModel, settings: Settings):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=settings.lora.rank,
            lora_alpha=settings.lora.alpha,
            lora_dropout=settings.lora.dropout,
            target_modules=settings.lora.target_modules,
            layers_to_transform=settings.lora.adapted_layers(loaded.model.config.num_hidden_layers),
            task_type="CAUSAL_LM",
        )
        return get_peft_model(loaded.model, config)

    def detach(self, peft_model, loaded: LoadedModel) -> None:
        # unload() removes the LoRA layers without merging them, leaving the base model as it was.
        loaded.model = peft_model.unload()
        loaded.model.eval()


def make_backend(name: str):
    if name == "unsloth":
        from lift_tool.unsloth_backend import UnslothBackend

        return UnslothBackend()
    return PeftBackend()


def training_precision(device: str, requested: str) -> str:
    """``bf16`` (autocast) on CPUs that support it, or where asked; ``fp32`` otherwise; ``native`` on CUDA, where
    the model is already loaded in bf16."""
    if device.startswith("cuda"):
        return "native"
    if requested == "fp32":
        return "fp32"
    if requested == "bf16" or cpu_has_bf16_kernels():
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def cpu_training_numerics(causal_lm, precision: str):
    """Make CPU training fast for the duration of the block, and put everything back afterwards.

    With bf16 autocast the frozen base weights are cast to bf16 at every matrix product anyway; casting them
    once up front computes the same thing without the copies (a model loaded in bf16, the default on such CPUs,
    needs none). Eager attention beats the CPU flash-attention kernel at training lengths (a few hundred tokens).
    Together about 1.3x the tokens/s on a 2-core AVX-512 machine (measured with SmolLM2-135M). Master copies of
    the LoRA weights stay in fp32.
    """
    import torch

    if precision != "bf16":
        yield contextlib.nullcontext()
        return
    originals = {}
    for name, param in causal_lm.named_parameters():
        if not param.requires_grad and param.dtype == torch.float32 and param.dim() == 2:
            originals[name] = param.data
            param.data = param.data.to(torch.bfloat16)
    attention = causal_lm.config._attn_implementation
    switch = hasattr(causal_lm, "set_attn_implementation") and attention != "eager"
    if switch:
        causal_lm.set_attn_implementation("eager")
    try:
        yield torch.autocast("cpu", dtype=torch.bfloat16)
    finally:
        if switch:
            causal_lm.set_attn_implementation(attention)
        for name, param in causal_lm.named_parameters():
            if name in originals:
                param.data = originals[name]


# ------------------------------------------------------------------------------------------------ absorption


def generate_qa(document: Document, settings: Settings, qa_generator=None) -> list[QAPair]:
    generator = qa_generator or RuleQuestionGenerator(settings.training.questions_per_sentence, seed=settings.training.seed)
    pairs = generator.generate(document.text, document.title)
    if settings.training.max_answer_share is not None:  # None only before settings_for_model has filled it in
        pairs = limit_repeated_answers(pairs, settings.training.max_answer_share, seed=settings.training.seed)
    n_unanswerable = max(1, round(len(pairs) * max(settings.training.mix.unanswerable, 0.0)))
    if settings.training.mix.unanswerable > 0:
        pairs += unanswerable_questions(pairs, document.text, n_unanswerable, seed=settings.training.seed)
    return pairs


def absorb(
    document: Document,
    loaded: LoadedModel,
    settings: Settings,
    output_dir: Path,
    qa_generator=None,
    progress: bool = True,
    on_step: Callable[[StepReport], None] | None = None,
) -> dict:
    """Train an adapter for ``document`` on ``loaded`` and save it with its manifest into ``output_dir``.

    Returns the manifest. The base model is left exactly as it was (LoRA layers removed) whatever happens.
    """
    import torch

    started = time.monotonic()
    # The fingerprint of the settings as asked for: a later request with the same settings finds this adapter.
    settings_fingerprint = settings.training_fingerprint()
    settings = settings_for_model(loaded, settings)
    training = settings.training
    device = str(loaded.device)
    # Chosen first, so that a wrong --backend fails before any work is done.
    backend = make_backend(choose_backend(settings.backend, device, reloadable=loaded.path is not None))
    n_tokens = len(loaded.tokenizer(document.text, add_special_tokens=False)["input_ids"])
    if n_tokens > settings.max_document_tokens:
        raise InputError(
            f"the document has {n_tokens:,} tokens, over the limit of {settings.max_document_tokens:,} "
            "(raise LIFT_MAX_DOCUMENT_TOKENS, or use retrieval for this document)"
        )
    random.seed(training.seed)
    torch.manual_seed(training.seed)
    rng = random.Random(training.seed)

    qa_pairs = generate_qa(document, settings, qa_generator)
    builder = TaskBuilder(loaded.tokenizer, document.text, document.title, training, qa_pairs)
    plan = [batches(builder.epoch(rng), training.batch_tokens, rng) for _ in range(math.ceil(training.epochs))]
    if training.epochs != math.ceil(training.epochs):  # a fractional last epoch: keep that share of it
        last = plan[-1]
        plan[-1] = last[: max(1, round(len(last) * (training.epochs - int(training.epochs))))]
    micro_batches = [batch for epoch in plan for batch in epoch]
    wanted = training.min_steps * training.grad_accum
    while micro_batches and len(micro_batches) < wanted:  # a short document: more passes, freshly shuffled
        micro_batches += batches(builder.epoch(rng), training.batch_tokens, rng)[: wanted - len(micro_batches)]
    total_steps = math.ceil(len(micro_batches) / training.grad_accum)

    precision = training_precision(device, training.precision)
    model = backend.attach(loaded, settings)
    history: list[dict] = []
    try:
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=training.learning_rate, weight_decay=training.weight_decay)
        with cpu_training_numerics(model.get_base_model(), precision) as autocast:
            stats = _train(
                model, optimizer, micro_batches, total_steps, training, loaded, autocast, started, history, progress, on_step
            )
        model.eval()
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)
        train_seconds = time.monotonic() - started
        manifest = {
            "format": MANIFEST_FORMAT,
            "doc_id": document.doc_id,
            "title": document.title,
            "tokens": n_tokens,
            "chars": len(document.text),
            "base_model": loaded.name,
            "base_fingerprint": loaded.fingerprint,
            "settings_fingerprint": settings_fingerprint,
            "settings": {"lora": settings.lora.model_dump(), "training": training.model_dump()},
            "backend": backend.name,
            "device": device,
            "precision": precision,
            "train_seconds": round(train_seconds, 2),
            "steps": stats["steps"],
            "planned_steps": total_steps,
            "stopped_by_budget": stats["stopped_by_budget"],
            "tokens_trained": stats["tokens"],
            "tokens_per_second": round(stats["tokens"] / max(stats["seconds"], 1e-9), 1),
            "qa_pairs": sum(pair.answerable for pair in qa_pairs),
            "unanswerable_pairs": sum(not pair.answerable for pair in qa_pairs),
            "losses": stats["losses"],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "lift_tool_version": __version__,
        }
        (output_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        return manifest
    except KeyboardInterrupt:
        raise AbsorptionInterrupted("absorption interrupted: nothing was stored") from None
    finally:
        backend.detach(model, loaded)


SMALL_MODEL_PARAMETERS = 300_000_000


def settings_for_model(loaded: LoadedModel, settings: Settings) -> Settings:
    """The settings with what they leave to the model's size filled in, as measured:

    - learning rate: 4e-3 suits SmolLM2-135M (benchmarks/results/recipe.md); on Qwen2.5-0.5B it made the loss
      diverge, where 1e-3 trained steadily;
    - adapted layers: on SmolLM2-135M the upper half learns nearly as much as every layer in about half the time;
      on Qwen2.5-0.5B every layer scored F1 21.6 against 12.9 for the upper half, for 1.4x the time, and neither
      a second epoch nor a 2e-3 rate on every layer did better (recipe-qwen2.5-coder-0.5b.md);
    - repeated answers: on SmolLM2-135M, leaving out questions beyond 2% per answer kept lift+rag from answering
      the subject's name to anything (benchmarks/results/answer-share/README.md); the 0.5B model keeps every
      question, the recipe its reports were measured with, until it is measured there too.
    """
    small = sum(parameter.numel() for parameter in loaded.model.parameters()) < SMALL_MODEL_PARAMETERS
    training, lora = settings.training, settings.lora
    if training.learning_rate is None:
        training = training.model_copy(update={"learning_rate": 4e-3 if small else 1e-3})
    if training.max_answer_share is None:
        training = training.model_copy(update={"max_answer_share": 0.02 if small else 1.0})
    if lora.layer_fraction is None:
        lora = lora.model_copy(update={"layer_fraction": 0.5 if small else 1.0})
    return settings.model_copy(update={"training": training, "lora": lora})


def _train(model, optimizer, micro_batches, total_steps, training, loaded, autocast, started, history, progress, on_step):
    """The optimisation loop. Returns counts and losses; stops early at the time budget."""
    import torch
    from tqdm.auto import tqdm

    budget = training.budget_seconds
    pad_id = loaded.tokenizer.pad_token_id
    kind_losses: dict[str, list[float]] = {}
    tokens_done, step, train_started = 0, 0, time.monotonic()
    stopped_by_budget = False
    first_loss = None
    bar = tqdm(total=total_steps, desc="absorbing", unit="step", disable=not progress, leave=False)
    step_seconds = 0.0
    for first in range(0, len(micro_batches), training.grad_accum):
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
                loss_sum, per_kind = _batch_loss(model, batch, pad_id)
            (loss_sum / targets_in_step).backward()  # the step's loss is the mean over all its target tokens
            step_loss += loss_sum.item()
            tokens_done += sum(len(example) for example in batch)
            for kind, value in per_kind.items():
                kind_losses.setdefault(kind, []).append(value)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], training.max_grad_norm)
        for group_params in optimizer.param_groups:
            group_params["lr"] = _learning_rate(training, step, total_steps, time.monotonic() - started, budget)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        step_seconds = time.monotonic() - step_started
        mean_loss = step_loss / max(targets_in_step, 1)
        first_loss = mean_loss if first_loss is None else first_loss
        history.append({"step": step, "loss": mean_loss})
        rate = tokens_done / max(time.monotonic() - train_started, 1e-9)
        bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{rate:.0f}")
        bar.update(1)
        if on_step:
            on_step(StepReport(step, total_steps, mean_loss, rate, time.monotonic() - started))
        if budget is not None and step == 1 and time.monotonic() - started > budget:
            bar.close()
            raise BudgetError(
                f"a budget of {budget:g} s is too small: one training step took {step_seconds:.1f} s on this "
                f"machine (setup included: {time.monotonic() - started:.1f} s); give a larger --budget-seconds"
            )
    bar.close()
    recent = history[-max(1, len(history) // 10) :]
    losses = {
        "first": round(first_loss, 4) if first_loss is not None else None,
        "final": round(sum(h["loss"] for h in recent) / len(recent), 4) if recent else None,
        "final_by_kind": {kind: round(_tail_mean(values), 4) for kind, values in sorted(kind_losses.items())},
    }
    return {
        "steps": step,
        "tokens": tokens_done,
        "seconds": time.monotonic() - train_started,
        "stopped_by_budget": stopped_by_budget,
        "losses": losses,
    }


def _tail_mean(values: list[float]) -> float:
    tail = values[-max(1, len(values) // 5) :]
    return sum(tail) / len(tail)


def _learning_rate(training, step: int, total_steps: int, elapsed: float, budget: float | None) -> float:
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


def _batch_loss(model, batch: list[Example], pad_id: int):
    """Summed cross-entropy over the labelled positions of a micro-batch, and the mean loss per example kind.

    Runs the transformer body, then the output layer only where there is a label.
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
    hidden = causal_lm.base_model(input_ids=input_ids, attention_mask=attention).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    token_losses = F.cross_entropy(logits, targets[keep], reduction="none")

    per_kind: dict[str, float] = {}
    rows = keep.nonzero()[:, 0]
    for row, example in enumerate(batch):
        mine = token_losses[rows == row]
        if mine.numel():
            per_kind.setdefault(example.kind, mine.mean().item())
    return token_losses.sum(), per_kind
