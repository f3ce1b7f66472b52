"""torch.compile on the training step: the loop's training tokens/s on the demo document's plan, eager against the
decoder layers compiled (inductor, dynamic shapes), and what compiling costs up front.

    python benchmarks/bench_compile.py [--steps 30] [--out DIR]

Each mode runs in a process of its own (a compiled model cannot be uncompiled), on the first ``--steps``
micro-batches of the default recipe's plan, with the real training step (``loop.batch_loss``, backward, AdamW).
The rate is taken after the first five steps, which in compiled mode include the compilation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import command_line, header, machine, results_dir, started_at, write_report


def run_mode(mode: str, steps: int) -> dict:
    """The loop over ``steps`` micro-batches in this process: seconds of the first five, tokens/s after them."""
    import torch

    from lift_tool.config import load_settings
    from lift_tool.documents import read_document
    from lift_tool.models import load_model
    from lift_tool.sample import sample_document_path
    from lift_tool.training.absorb import setup
    from lift_tool.training.loop import batch_loss

    settings = load_settings()
    loaded = load_model(settings=settings)
    plan = setup(read_document(sample_document_path()), loaded, settings)
    model = plan.backend.attach(loaded, plan.settings)
    model.train()
    if mode == "compiled":
        for layer in model.get_base_model().base_model.layers:
            layer.compile(dynamic=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    pad_id = loaded.tokenizer.pad_token_id
    timed = []
    for batch in plan.micro_batches[:steps]:
        started = time.monotonic()
        loss, _ = batch_loss(model, batch, pad_id)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timed.append((time.monotonic() - started, sum(len(example) for example in batch)))
    after = timed[5:]
    return {"mode": mode, "steps": len(timed), "first_five_seconds": round(sum(t for t, _ in timed[:5]), 1),
            "tokens_per_second": round(sum(n for _, n in after) / sum(t for t, _ in after), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--mode", choices=["eager", "compiled"], help=argparse.SUPPRESS)  # one child process's mode
    parser.add_argument("--out", type=Path, default=results_dir("compile"))
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.steps)))
        return
    started, on_machine, t0 = started_at(), machine(), time.monotonic()
    results = []
    for mode in ("eager", "compiled"):
        child = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps)],
                               capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    eager, compiled = results
    lines = [
        *header("torch.compile on the training step", started, on_machine, (time.monotonic() - t0) / 60,
                command=command_line()),
        f"The default recipe's plan for the demo document, first {args.steps} micro-batches, the real training step. "
        "Compiled: each decoder layer with `torch.compile(dynamic=True)` (inductor); its first five steps include "
        "the compilation, which is shorter when inductor finds kernels of an earlier run in its cache on disk "
        "(`torch._inductor` keeps them under the temporary folder).",
        "",
        "| mode | training tokens/s after 5 steps | seconds of the first 5 steps |",
        "|---|---|---|",
        *(f"| {r['mode']} | {r['tokens_per_second']:.0f} | {r['first_five_seconds']:.1f} |" for r in results),
        "",
        f"Compiled against eager: {compiled['tokens_per_second'] / eager['tokens_per_second']:.2f}x the rate, "
        f"{compiled['first_five_seconds'] - eager['first_five_seconds']:.0f} s more up front.",
    ]
    write_report(args.out, "compile", lines, results, started, on_machine)


if __name__ == "__main__":
    main()
