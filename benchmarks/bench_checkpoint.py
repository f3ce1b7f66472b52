"""Resumable absorption: what a checkpoint of training costs. For each model, on the demo document's plan: the
checkpoint's size, the seconds to capture and write it and to read and restore it, a training step's seconds, and
the share of training time that one checkpoint every ``training.checkpoint_seconds`` takes.

    python benchmarks/bench_checkpoint.py [--models smollm2-135m,qwen2.5-coder-0.5b] [--repeats 3] [--out DIR]

Each model runs a few real training steps first (so that the optimizer holds its state), then writes and reads
the checkpoint ``--repeats`` times into a temporary folder; medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import command_line, header, machine, results_dir, started_at, write_report


def measure(model_name: str, repeats: int, steps: int = 3) -> dict:
    import torch

    from lift_tool.config import load_settings
    from lift_tool.documents import read_document
    from lift_tool.models import load_model
    from lift_tool.sample import sample_document_path
    from lift_tool.training import checkpoint
    from lift_tool.training.absorb import parameter_groups, setup
    from lift_tool.training.loop import batch_loss

    settings = load_settings(model=model_name)
    loaded = load_model(settings=settings)
    set_up = time.monotonic()
    plan = setup(read_document(sample_document_path()), loaded, settings)
    setup_seconds = time.monotonic() - set_up
    model = plan.backend.attach(loaded, plan.settings)
    try:
        model.train()
        optimizer = torch.optim.AdamW(parameter_groups(model, 1.0), lr=1e-4)
        step_seconds = []
        for batch in plan.micro_batches[:steps]:
            started = time.monotonic()
            loss, _ = batch_loss(model, batch, loaded.tokenizer.pad_token_id)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_seconds.append(time.monotonic() - started)
        key = checkpoint.plan_key(loaded.fingerprint, plan.settings_fingerprint, plan.precision, plan.device,
                                  plan.micro_batches, plan.settings.training.grad_accum)
        writes, reads, size = [], [], 0
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(repeats):
                started = time.monotonic()
                checkpoint.save(Path(folder), checkpoint.capture(model, optimizer, key, steps, 0, 0.0, 0.0, [], {}))
                writes.append(time.monotonic() - started)
                size = (Path(folder) / checkpoint.CHECKPOINT_FILE).stat().st_size
                started = time.monotonic()
                checkpoint.restore(model, optimizer, checkpoint.load(Path(folder), key))
                reads.append(time.monotonic() - started)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    finally:
        plan.backend.detach(model, loaded)
    every = settings.training.checkpoint_seconds
    write = statistics.median(writes)
    return {"model": model_name, "precision": plan.precision, "trainable_parameters": trainable,
            "checkpoint_mib": round(size / 2**20, 1), "write_seconds": round(write, 3),
            "read_seconds": round(statistics.median(reads), 3),
            "step_seconds": round(statistics.median(step_seconds), 2), "setup_seconds": round(setup_seconds, 1),
            "checkpoint_seconds": every, "share_of_training": round(write / (every + write), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=results_dir("checkpoint"))
    args = parser.parse_args()
    started, on_machine, t0 = started_at(), machine(), time.monotonic()
    results = []
    for name in args.models.split(","):
        results.append(measure(name, args.repeats))
        print(results[-1], flush=True)
    lines = [
        *header("What a checkpoint of training costs", started, on_machine, (time.monotonic() - t0) / 60,
                command=command_line()),
        "The demo document's plan, the default recipe; after a few real training steps, the training state (LoRA "
        "weights, AdamW's two moments, the random generators, the loop's place) captured and written atomically "
        f"(flushed to disk), then read and restored; medians of {args.repeats}. Share of training: one write every "
        "`training.checkpoint_seconds` of training. An interruption loses at most that many seconds of training, "
        "plus the set-up (questions, plan) that the resumed absorption does again.",
        "",
        "| model | precision | trainable parameters | checkpoint MiB | write s | read and restore s | training step s "
        "| set-up s | every s | share of training |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['model']} | {r['precision']} | {r['trainable_parameters']:,} | {r['checkpoint_mib']} | "
          f"{r['write_seconds']:.2f} | {r['read_seconds']:.2f} | {r['step_seconds']:.2f} | {r['setup_seconds']:.1f} | "
          f"{r['checkpoint_seconds']:g} | {r['share_of_training']:.2%} |" for r in results),
    ]
    write_report(args.out, "checkpoint", lines, results, started, on_machine)


if __name__ == "__main__":
    main()
