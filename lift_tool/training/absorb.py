"""Absorption: train a LoRA adapter on one document (LIFT), in three steps.

- setup: fill in the settings left to the model's size, choose the backend, check the document's length, build
  the synthetic tasks and cut them into the plan of micro-batches (length-grouped, epoch after epoch);
- train: the optimizer, and the loop (``loop.train``) under the training precision, the time budget included;
- save: the PEFT adapter and its manifest (``lift_tool.memory.manifest``) into the output folder.

Given a checkpoint folder, training saves its state there every few minutes and, when the folder holds a
checkpoint of the same plan, goes on from it (``checkpoint``): an interrupted absorption is resumed, not redone.

The backend attaches LoRA between setup and train and detaches it after save, whatever happens, so the base
model is left exactly as it was.
"""

from __future__ import annotations

import logging
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
from lift_tool.errors import AbsorptionInterrupted, InputError
from lift_tool.memory.manifest import Manifest
from lift_tool.memory.retrieval import Chunk, chunk_text, embedding_tokenizer
from lift_tool.models import LoadedModel
from lift_tool.training import checkpoint, loop
from lift_tool.training.backend import AdaptedModel, TrainingBackend, choose_backend, make_backend
from lift_tool.training.distill import teacher_targets
from lift_tool.training.layer_cache import FrozenLayerCache
from lift_tool.training.loop import LoopResult, StepReport
from lift_tool.training.precision import cpu_training_numerics, training_precision
from lift_tool.training.questions import QAPair
from lift_tool.training.recipe import generate_qa, settings_for_model
from lift_tool.training.tasks import Example, TaskBuilder, batches, coverage

_log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What setup prepares for training and saving."""

    settings: Settings  # with the model-size defaults filled in
    settings_fingerprint: str  # of the settings as asked for
    backend: TrainingBackend
    device: str
    precision: str
    document_tokens: int
    qa_pairs: list[QAPair]
    micro_batches: list[list[Example]]
    total_steps: int


def absorb(
    document: Document,
    loaded: LoadedModel,
    settings: Settings,
    output_dir: Path,
    qa_generator=None,
    progress: bool = True,
    on_step: Callable[[StepReport], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> Manifest:
    """Train an adapter for ``document`` on ``loaded`` and save it with its manifest into ``output_dir``.

    Returns the manifest. The base model is left exactly as it was (LoRA layers removed) whatever happens.
    ``checkpoint_dir``: where training saves its state every ``training.checkpoint_seconds``, and whose checkpoint
    of the same plan it goes on from (the caller removes the folder once the adapter is stored).
    """
    started = time.monotonic()
    checkpoints: checkpoint.Checkpoints | None = None
    try:
        # Written questions and the teacher run the model first, before LoRA is attached.
        plan = setup(document, loaded, settings, qa_generator, progress,
                     written_file=checkpoint_dir / checkpoint.WRITTEN_FILE if checkpoint_dir is not None else None)
        model = plan.backend.attach(loaded, plan.settings)
        try:
            if checkpoint_dir is not None and plan.settings.training.checkpoint_seconds is not None:
                checkpoints = checkpoint.Checkpoints(checkpoint_dir, checkpoint.plan_key(
                    loaded.fingerprint, plan.settings_fingerprint, plan.precision, plan.device, plan.micro_batches,
                    plan.settings.training.grad_accum), plan.settings.training.checkpoint_seconds)
            result = train(model, plan, loaded, started, progress, on_step, checkpoints)
            return save(model, plan, result, document, loaded, output_dir, started)
        finally:
            plan.backend.detach(model, loaded)
    except (KeyboardInterrupt, AbsorptionInterrupted) as err:  # Ctrl-C, or a cancelled job's on_step
        saved = checkpoints and checkpoints.latest_step()
        message = str(err) if isinstance(err, AbsorptionInterrupted) else "absorption interrupted: nothing was stored"
        if saved:
            message += (f"; its training was saved at step {saved} of {plan.total_steps}, and absorbing the document "
                        "again with the same settings goes on from there")
        raise AbsorptionInterrupted(message) from None


def setup(document: Document, loaded: LoadedModel, settings: Settings, qa_generator=None,
          progress: bool = False, written_file: Path | None = None) -> Plan:
    """Settings, backend, the length check, seeds, and the micro-batches to train on (the model's written
    questions kept in, or read back from, ``written_file``)."""
    import torch

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

    # Before LoRA: the base model writes.
    qa_pairs = generate_qa(document, settings, qa_generator, loaded, progress, written_file)
    builder = TaskBuilder(loaded.tokenizer, document.text, document.title, training, qa_pairs,
                          retrieval_passages(document, settings), settings.retrieval.k)
    if training.distill > 0:  # the teacher is the base model as it is now, before LoRA is attached
        builder.use_teacher(teacher_targets(loaded, builder))
    epochs = [batches(builder.epoch(rng), training.batch_tokens, rng) for _ in range(math.ceil(training.epochs))]
    if training.epochs != math.ceil(training.epochs):  # a fractional last epoch: keep that share of it
        last = epochs[-1]
        epochs[-1] = last[: max(1, round(len(last) * (training.epochs - int(training.epochs))))]
    micro_batches = [batch for epoch in epochs for batch in epoch]
    wanted = training.min_steps * training.grad_accum
    while micro_batches and len(micro_batches) < wanted:  # a short document: more passes, freshly shuffled
        micro_batches += batches(builder.epoch(rng), training.batch_tokens, rng)[: wanted - len(micro_batches)]
    total_steps = math.ceil(len(micro_batches) / training.grad_accum)
    return Plan(
        settings=settings,
        settings_fingerprint=settings_fingerprint,
        backend=backend,
        device=device,
        precision=training_precision(device, training.precision),
        document_tokens=n_tokens,
        qa_pairs=qa_pairs,
        micro_batches=micro_batches,
        total_steps=total_steps,
    )


def retrieval_passages(document: Document, settings: Settings) -> list[Chunk]:
    """The document cut as retrieval cuts it, for training with retrieved passages in the prompt (none without)."""
    if settings.training.mix.qa_passages == 0:
        return []
    return chunk_text(document.text, embedding_tokenizer(), settings.retrieval.chunk_tokens,
                      settings.retrieval.chunk_overlap)


def train(model: AdaptedModel, plan: Plan, loaded: LoadedModel, started: float, progress: bool,
          on_step: Callable[[StepReport], None] | None,
          checkpoints: checkpoint.Checkpoints | None = None) -> LoopResult:
    """The optimizer over the LoRA weights (as a checkpoint of the plan left them, if there is one), and the loop
    under the training precision."""
    import torch

    training = plan.settings.training
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, training.lora_b_lr_ratio), lr=training.learning_rate,
                                  weight_decay=training.weight_decay)
    if checkpoints is not None:
        checkpoints.resume = checkpoint.load(checkpoints.folder, checkpoints.key)
        if checkpoints.resume is not None:
            try:
                checkpoint.restore(model, optimizer, checkpoints.resume)
                _log.info("resuming the absorption at step %d of %d", checkpoints.resume.step, plan.total_steps)
            except ValueError as err:
                _log.warning("the checkpoint in %s does not fit (%s): absorbing from the start", checkpoints.folder, err)
                checkpoints.resume = None
    pad_id = loaded.tokenizer.pad_token_id
    body = model.get_base_model().base_model
    first_adapted = plan.settings.lora.adapted_layers(len(getattr(body, "layers", [])))[0]
    cache = None
    if training.frozen_layer_cache_mb > 0 and FrozenLayerCache.applies(body, first_adapted):
        cache = FrozenLayerCache(body, first_adapted, plan.micro_batches, training.frozen_layer_cache_mb * 2**20)
    with cpu_training_numerics(model.get_base_model(), plan.precision) as autocast:
        return loop.train(model, optimizer, plan.micro_batches, plan.total_steps, training, pad_id, autocast, started,
                          progress, on_step, cache, checkpoints)


def parameter_groups(model: AdaptedModel, b_ratio: float) -> list[dict]:
    """The trainable weights for the optimizer: the LoRA B matrices at ``b_ratio`` times the learning rate of the
    rest (``lr_scale``, which the loop's schedule multiplies), or all of them in one group when it is 1."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if b_ratio == 1:
        return [{"params": [p for _, p in trainable], "lr_scale": 1.0}]
    b = [p for name, p in trainable if ".lora_B." in name]
    rest = [p for name, p in trainable if ".lora_B." not in name]
    return [{"params": rest, "lr_scale": 1.0}, {"params": b, "lr_scale": b_ratio}]


def save(model: AdaptedModel, plan: Plan, result: LoopResult, document: Document, loaded: LoadedModel,
         output_dir: Path, started: float) -> Manifest:
    """Write the adapter (plain PEFT files) and its manifest into ``output_dir``; return the manifest."""
    model.eval()
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    train_seconds = result.earlier_seconds + time.monotonic() - started
    settings = plan.settings
    manifest = Manifest(
        doc_id=document.doc_id,
        title=document.title,
        tokens=plan.document_tokens,
        chars=len(document.text),
        base_model=loaded.name,
        base_fingerprint=loaded.fingerprint,
        settings_fingerprint=plan.settings_fingerprint,
        settings={"lora": settings.lora.model_dump(), "training": settings.training.model_dump()},
        backend=plan.backend.name,
        device=plan.device,
        precision=plan.precision,
        train_seconds=round(train_seconds, 2),
        steps=result.steps,
        planned_steps=plan.total_steps,
        stopped_by_budget=result.stopped_by_budget,
        resumed_at_step=result.resumed_at_step,
        coverage=round(coverage(plan.micro_batches, result.steps * settings.training.grad_accum), 3),
        tokens_trained=result.tokens,
        tokens_per_second=round(result.tokens / max(result.seconds, 1e-9), 1),
        qa_pairs=sum(pair.answerable for pair in plan.qa_pairs),
        unanswerable_pairs=sum(not pair.answerable for pair in plan.qa_pairs),
        losses=result.losses,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        lift_tool_version=__version__,
    )
    manifest.write(output_dir)
    return manifest
