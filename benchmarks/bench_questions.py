"""Seconds per question, adapter against document in context, as the document grows; and after how many questions
absorbing pays for itself.

For each length (the same documents as bench_absorb.py: prefixes of the longest LooGLE document, cut at sentence
boundaries), the document is absorbed (a cache hit when bench_absorb.py ran with the same --home and settings) and
the same questions (that document's LooGLE questions) are asked with

  lift     the adapter, the document not in the prompt
  context  the document in the prompt, cut in the middle to the model's window (LIFT's truncated in-context)
  rag      retrieved chunks in the prompt (for reference)

Break-even: absorbing costs A seconds once; each question then saves (context - lift) seconds, so absorbing pays
for itself after ceil(A / (context - lift)) questions. A is the manifest's train_seconds (projected to the full
run when the absorption stopped at a time budget).

    python benchmarks/bench_questions.py [--model smollm2-135m] [--lengths 1000,2000,4000,8000,16000]
                                         [--questions 3] [--home DIR] [--budget-seconds S] [--max-new-tokens 32]
                                         [--out DIR]

Writes benchmarks/results/questions/MODEL.md and MODEL.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from common import (
    absorb_home, cut_to_tokens, header, longest_loogle_document, machine, model_tag, results_dir, started_at,
    write_json,
)

MODES = ("lift", "context", "rag")


def run(args) -> tuple[list[dict], str]:
    from lift_tool.generation import context_budget
    from lift_tool.config import load_settings
    from lift_tool.lift import Lift
    from lift_tool.models import load_model

    home = args.home or absorb_home(args.model)
    settings = load_settings(model=args.model, device=args.device, home=home / args.device,
                             max_new_tokens=args.max_new_tokens)
    loaded = load_model(settings=settings)
    lift = Lift(settings, model=loaded)
    title, source, pairs = longest_loogle_document()
    questions = [pair["Q"] for pair in pairs[: args.questions]]
    rows = []
    warmed = False
    for length in [int(x) for x in args.lengths.split(",")]:
        text = cut_to_tokens(loaded.tokenizer, source, length)
        print(f"{length:,} tokens: absorbing (or reusing) ...", file=sys.stderr, flush=True)
        result = lift.absorb(text, title=title, budget_seconds=args.budget_seconds, progress=True)
        manifest = result.adapter.manifest
        doc_id = result.document.doc_id
        if not warmed:  # the first call of each mode pays one-time setup (LoRA layers, embedding model)
            for mode in MODES:
                lift.ask("What is this document about?", [doc_id], mode=mode)
            warmed = True
        # cold: each question after another mode's (nothing of this document's prompt is cached: an agent moving
        # between documents); warm: the same questions again, one after another in one mode (the in-context
        # prompt's prefix is read once and reused).
        seconds = {f"{mode}_{kind}": [] for mode in MODES for kind in ("cold", "warm")}
        for question in questions:
            for mode in MODES:
                answer = lift.ask(question, [doc_id], mode=mode)
                seconds[f"{mode}_cold"].append(answer.seconds)
                print(f"  cold {mode:<8} {answer.seconds:6.2f} s  {answer.text[:60]!r}", file=sys.stderr, flush=True)
        for mode in MODES:
            lift.ask(questions[-1], [doc_id], mode=mode)  # the prefix of this mode, read once
            for question in questions:
                answer = lift.ask(question, [doc_id], mode=mode)
                seconds[f"{mode}_warm"].append(answer.seconds)
                print(f"  warm {mode:<8} {answer.seconds:6.2f} s", file=sys.stderr, flush=True)
        absorb_s = manifest.train_seconds
        if manifest.stopped_by_budget:
            absorb_s = absorb_s * manifest.planned_steps / max(1, manifest.steps)
        window = settings.context_window or loaded.context_window
        budget = context_budget(loaded.tokenizer, window, questions[0], [title], settings.max_new_tokens)
        row = {
            "tokens": result.document.tokens,
            "context_tokens": min(result.document.tokens, budget),
            "truncated": result.document.tokens > budget,
            **{f"{key}_median_s": round(statistics.median(values), 2) for key, values in seconds.items()},
            **{f"{key}_s": [round(s, 2) for s in values] for key, values in seconds.items()},
            "absorb_s": round(absorb_s, 1),
            "absorb_projected": bool(manifest.stopped_by_budget),
            "cached": result.cached,
        }
        for kind in ("cold", "warm"):
            saved = row[f"context_{kind}_median_s"] - row[f"lift_{kind}_median_s"]
            row[f"break_even_{kind}"] = math.ceil(absorb_s / saved) if saved > 0 else None
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows, title


def render(rows, args, title, started, seconds, description) -> str:
    lines = [
        *header("Seconds per question: adapter against document in context", started, description, seconds / 60),
        f"Model: `{args.model}`, greedy, at most {args.max_new_tokens} new tokens. Documents: prefixes of "
        f"{title!r} (LooGLE); the same {args.questions} questions at every length (that document's LooGLE "
        "questions). Medians over the questions, after one warm-up call per mode.",
        "",
        "| document tokens | context tokens in prompt | lift s | context s (cold) | context s (warm) | rag s | "
        "context / lift (cold) | absorption s | absorbing pays off after (cold / warm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["context_cold_median_s"] / r["lift_cold_median_s"] if r["lift_cold_median_s"] else float("nan")
        pays = " / ".join(f"{r[f'break_even_{kind}']} questions" if r[f"break_even_{kind}"] else "never"
                          for kind in ("cold", "warm"))
        lines.append(
            f"| {r['tokens']:,} | {r['context_tokens']:,}{' (truncated)' if r['truncated'] else ''} | "
            f"{r['lift_cold_median_s']:.2f} | {r['context_cold_median_s']:.2f} | {r['context_warm_median_s']:.2f} | "
            f"{r['rag_cold_median_s']:.2f} | {ratio:.1f}x | "
            f"{r['absorb_s']:.0f}{' (projected)' if r['absorb_projected'] else ''} | {pays} |"
        )
    lines += ["", "Cold: each question asked after another mode's, so nothing of the document's prompt is cached (an "
              "agent moving between documents). Warm: the questions asked one after another in one mode, so the "
              "in-context prompt's key/value prefix (the document) is read once and reused (the prefix "
              "cache). Absorbing pays for itself after ceil(absorption s / (context s - lift s)) questions "
              "(\"never\" where the adapter is not faster). Past the model's window the in-context prompt stops "
              "growing (its middle is cut), so its time levels off while the document is no longer all in the prompt."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", default="1000,2000,4000,8000,16000")
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--home", type=Path, help="memory holding (or to hold) the absorbed documents")
    parser.add_argument("--budget-seconds", type=float, help="time budget for absorptions that are not cached")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=results_dir("questions"))
    args = parser.parse_args()

    started = started_at()
    description = machine()
    t0 = time.monotonic()
    rows, title = run(args)
    name = model_tag(args.model)
    write_json(args.out / f"{name}.json", {"command": sys.argv, "started": started, "machine": description,
                                           "rows": rows})
    (args.out / f"{name}.md").write_text(render(rows, args, title, started, time.monotonic() - t0, description))
    print(f"wrote {args.out / (name + '.md')}")


if __name__ == "__main__":
    main()
