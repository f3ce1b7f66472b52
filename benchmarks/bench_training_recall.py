"""Does the adapter answer what it was trained on, and how much of that carries over to the data set's questions?

For each document of a finished ``bench_quality.py`` run, a sample of the rule questions its absorption trained on
(``RuleQuestionGenerator`` with the run's settings makes the same ones again, without the model) is asked
closed-book of the document's adapter and of the base model, and scored by token F1 against the training answer.
Beside them, the same two methods' F1 on the data set's own questions, from the run's rows. A high first figure
and a low second one say that the adapter holds its training questions and the data set asks something else of
it: the limit is in which questions training asks, not in how long it trains. Each sampled question is also asked
reworded (the base model rewrites it, keeping its meaning), to tell a question learnt from a fact learnt. The
questions the model wrote itself are not kept after an absorption ends, so only the rule questions are asked again.

    LIFT_...=... python benchmarks/bench_training_recall.py --model qwen2.5-coder-0.5b --set loogle-short
        [--questions 30] [--label LABEL] [--work DIR] [--out DIR]

Run it with the LIFT_* settings of the run (they choose its work folder). Writes
``benchmarks/results/training_recall/MODEL-SET[-LABEL].md`` and its ``.json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from common import (
    WORK, command_with_environment, find_work_folder, header, machine, model_tag, open_run, read_json, results_dir,
    started_at, write_report,
)

METHODS = ("lift", "base")
REWORD = ("Reword this question: keep its meaning and change its words and their order. Write only the new "
          "question.\n\n{question}")


def reworded(lift, question: str) -> str:
    """``question`` rewritten by the base model (greedy), without any document."""
    from lift_tool.generation import generate_reply

    with lift.generator.base() as model:
        prompt = [{"role": "user", "content": REWORD.format(question=question)}]
        reply = generate_reply(model, lift.loaded.tokenizer, prompt, max_new_tokens=64)
    return reply.text.strip().strip('"') or question


def recall(folder: Path, name: str, per_document: int) -> list[dict]:
    """Per document: its rule questions, and each method's F1 on a sample of them and on the data set's."""
    from lift_tool.eval import summarise
    from lift_tool.eval.scoring import token_f1
    from lift_tool.training.questions import RuleQuestionGenerator

    lift, documents, _, _ = open_run(folder, name)
    training = lift.settings.training
    rows = read_json(folder / "results.json")
    out = []
    for doc_id, info in documents.items():
        entry = lift.registry.resolve(info["lift_doc_id"])
        text = lift.registry.document_text(entry.doc_id)
        pairs = RuleQuestionGenerator(training.questions_per_sentence, seed=training.seed).generate(text, entry.title)
        sample = random.Random(0).sample(pairs, min(per_document, len(pairs)))
        scores = {method: [] for method in METHODS}
        scores["reworded"], examples = [], []
        for number, pair in enumerate(sample, 1):
            for method in METHODS:
                answer = lift.ask(pair.question, [entry.doc_id], mode=method)
                scores[method].append(token_f1(answer.text, pair.answer))
            other = reworded(lift, pair.question)
            answer = lift.ask(other, [entry.doc_id], mode="lift")
            scores["reworded"].append(token_f1(answer.text, pair.answer))
            examples.append({"question": pair.question, "reworded": other, "answer": pair.answer,
                             "adapter_reworded": answer.text})
            print(f"  {doc_id[:30]} [{number}/{len(sample)}] lift {scores['lift'][-1]:.2f} reworded "
                  f"{scores['reworded'][-1]:.2f} {other[:60]!r}", flush=True)
        asked = summarise([row for row in rows if row["doc_id"] == doc_id and row["method"] in METHODS],
                          {doc_id: info})
        out.append({"doc_id": doc_id, "tokens": info["tokens"], "rule_questions": len(pairs), "asked": len(sample),
                    "training": {method: round(100 * statistics.fmean(v), 1) for method, v in scores.items()},
                    "dataset": {method: asked[method]["f1"] if method in asked else None for method in METHODS},
                    "dataset_questions": asked["lift"]["n_free"] if "lift" in asked else 0, "examples": examples})
    return out


def render(model: str, name: str, results: list[dict], started: str, minutes: float, description: str) -> list[str]:
    lines = [
        *header(f"What the adapter holds of its training questions: `{model}`, {name}", started, description, minutes,
                command_with_environment()),
        "Token F1, closed-book (no passage in the prompt). Training questions: a sample of the rule questions the "
        "absorption trained on, scored against their training answers; reworded: the same questions rewritten by the "
        "base model, asked of the adapter. Data set questions: the run's own rows. The questions, their rewordings "
        "and the adapter's answers to them are in the report's .json.",
        "",
        "| document | tokens | rule questions (asked) | training questions: adapter | reworded: adapter | base model | "
        "data set questions: adapter | base model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['doc_id']} | {r['tokens']:,} | {r['rule_questions']:,} ({r['asked']}) | "
                     f"{r['training']['lift']:.1f} | {r['training']['reworded']:.1f} | {r['training']['base']:.1f} | "
                     f"{r['dataset']['lift']:.1f} | "
                     f"{r['dataset']['base']:.1f} |")
    mean = lambda part, method: statistics.fmean(r[part][method] for r in results)  # noqa: E731
    lines += [f"| mean of the documents | | | {mean('training', 'lift'):.1f} | {mean('training', 'reworded'):.1f} | "
              f"{mean('training', 'base'):.1f} | "
              f"{mean('dataset', 'lift'):.1f} | {mean('dataset', 'base'):.1f} |"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--set", default="loogle-short", help="a set of bench_quality.py")
    parser.add_argument("--questions", type=int, default=30, help="training questions asked per document")
    parser.add_argument("--label", default=None, help="names the report, as bench_quality.py's --label")
    parser.add_argument("--work", type=Path, default=WORK, help="bench_quality.py's --work")
    parser.add_argument("--out", type=Path, default=results_dir("training_recall"))
    args = parser.parse_args()
    started, description, t0 = started_at(), machine(), time.monotonic()
    folder = find_work_folder(args.work, args.model, args.set)
    print(f"{args.model}:{args.set}: {folder}", flush=True)
    results = recall(folder, args.set, args.questions)
    lines = render(args.model, args.set, results, started, (time.monotonic() - t0) / 60, description)
    stem = f"{model_tag(args.model)}-{args.set}" + (f"-{args.label}" if args.label else "")
    write_report(args.out, stem, lines, results, started, description)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
