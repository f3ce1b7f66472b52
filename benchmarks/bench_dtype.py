"""Answering in bf16 against float32 on the CPU: speed, and whether the answers change.

On CPUs with bf16 kernels (x86 with AVX-512 or AMX) lift-tool loads the answering model in bf16. This measures
what that buys and what it costs, on each model given, in one process:

  prompt s      reading a 1,000-token prompt (one forward pass, no cache), median of 3
  new tokens/s  32 over the time to read a 200-token prompt and generate 32 greedy tokens, median of 3
  agreement     on the first --questions answerable questions of a SQuAD dev article, with the article in the
                prompt (the ``context`` method): how many answers are word for word the same in both formats,
                and the token F1 of each format

    python benchmarks/bench_dtype.py [--models smollm2-135m,qwen2.5-coder-0.5b] [--questions 20] [--out DIR]

Writes benchmarks/results/dtype/dtype.md and dtype.json. The speed-up needs a CPU with bf16 kernels: the report's
machine line says whether the CPU has avx512_bf16 / amx_bf16.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import DEV_SET, header, machine, results_dir, started_at, write_json

DATA = DEV_SET
ARTICLE = "squad2dev_Amazon_rainforest"
DTYPES = ["float32", "bfloat16"]


def timed(action, repeats: int = 3) -> float:
    """The median wall time of ``action`` over ``repeats`` runs, after one warm-up run."""
    action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(spec: str, dtype: str, article, questions) -> dict:
    import torch

    from lift_tool.generation import PrefixCache, answer
    from lift_tool.config import load_settings
    from lift_tool.eval.scoring import best, token_f1
    from lift_tool.models import load_model

    loaded = load_model(settings=load_settings(model=spec, device="cpu", dtype=dtype))
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer(article.text, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def read_prompt():
        with torch.inference_mode():
            model(input_ids=ids[:, :1000])

    def generate():
        with torch.inference_mode():
            model.generate(input_ids=ids[:, :200], max_new_tokens=32, min_new_tokens=32, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)

    prompt_s = timed(read_prompt)
    generate_s = timed(generate)
    cache = PrefixCache()
    answers = [answer(model, tokenizer, q.question, [article.title or ARTICLE], article.text, 32,
                      prefix_cache=cache)
               for q in questions]
    return {
        "model": loaded.name, "dtype": dtype, "prompt_s": round(prompt_s, 3),
        "new_tokens_per_s": round(32 / generate_s, 1), "answers": answers,
        "f1": round(100 * statistics.mean(best(token_f1, a, q.answers) for a, q in zip(answers, questions)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--out", type=Path, default=results_dir("dtype"))
    args = parser.parse_args()

    from lift_tool.eval import load_dataset

    article = next(d for d in load_dataset(DATA) if d.doc_id == ARTICLE)
    questions = [q for q in article.questions if q.answers and not q.unanswerable][: args.questions]
    started = started_at()
    description = machine()
    rows = []
    for spec in args.models.split(","):
        for dtype in DTYPES:
            print(f"{spec} in {dtype} …", file=sys.stderr)
            rows.append(measure(spec, dtype, article, questions))

    lines = [*header("Answering in bf16 against float32 on the CPU", started, description),
             f"Prompt: one forward pass over the first 1,000 tokens of {ARTICLE}; generation: 32 greedy tokens after "
             "its first 200 (the time includes reading those 200); each the median of 3 after a warm-up. Answers: "
             f"the first {len(questions)} answerable questions of that article, the article in the prompt, 32 new "
             "tokens at most, token F1 against the gold answers.", "",
             "| model | format | prompt s | new tokens/s | prompt speed-up | generation speed-up | F1 | same answers |",
             "|---|---|---|---|---|---|---|---|"]
    for full, half in zip(rows[::2], rows[1::2]):
        same = sum(a == b for a, b in zip(full["answers"], half["answers"]))
        for row in (full, half):
            faster = row is half
            lines.append(
                f"| {row['model']} | {row['dtype']} | {row['prompt_s']:.2f} | {row['new_tokens_per_s']:.1f} | "
                + (f"{full['prompt_s'] / half['prompt_s']:.1f}x | {half['new_tokens_per_s'] / full['new_tokens_per_s']:.1f}x"
                   if faster else "1.0x | 1.0x")
                + f" | {row['f1']:.1f} | " + (f"{same}/{len(questions)}" if faster else "-") + " |")
    lines += ["", "Same answers: questions answered word for word the same in both formats. Speed-ups: float32 time "
              "over bf16 time."]
    write_json(args.out / "dtype.json", {"machine": description, "started": started, "rows": rows})
    (args.out / "dtype.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
