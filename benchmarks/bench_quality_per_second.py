"""Quality per second of absorption: the adapter alone's score on one SQuAD and one LooGLE article against the
seconds spent absorbing, for absorption recipes under time budgets (30 s, 60 s, ... up to a whole absorption).

    python benchmarks/bench_quality_per_second.py [--recipes default,...] [--documents squad:0,loogle-short:3]
        [--budgets 30,60,120,full] [--limit-questions 40] [--again] [--report-only] [--out DIR]

Each point absorbs the article once under its budget (the learning rate's schedule follows the budget, so a
point is not a checkpoint of a longer run), then asks the article's questions with the adapter and no document in
the prompt. Score: token F1 against the gold answers (an unanswerable SQuAD question scores 1 when the answer
says the document does not tell). The recipes are those of ``bench_recipe.py``. Points are kept in
quality_per_second.json by (document, recipe, budget), so a run may be done in parts; the report and the figure
are written from all of them; a point already there is skipped unless --again.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench_recipe import RECIPES, absorb_and_ask, recipe_names, recipe_settings
from common import QUALITY_SETS, command_line, header, machine, merged, read_json, results_dir, started_at, write_json


def load_article(spec: str):
    """``SET:INDEX`` (``squad:0``, ``loogle-short:3``): that article of a bench_quality set."""
    from lift_tool.eval.data import load_dataset

    name, _, index = spec.partition(":")
    path, pattern, _ = QUALITY_SETS[name]
    documents = load_dataset(path)
    if pattern:
        import fnmatch

        documents = [document for document in documents if fnmatch.fnmatch(document.doc_id, pattern)]
    return documents[int(index or 0)]


def measure_point(loaded, article, recipe: str, budget: float | None, limit_questions: int, base_settings) -> dict:
    """Absorb ``article`` with ``recipe`` under ``budget`` (None: whole), then score the adapter's answers."""
    from lift_tool.documents import make_document
    from lift_tool.eval.scoring import score_answer

    settings = recipe_settings(base_settings, merged(RECIPES[recipe][1], {"training": {"budget_seconds": budget}}))
    document = make_document(article.text, title=article.title or article.doc_id)
    questions = article.questions[:limit_questions]
    manifest, seconds, answers = absorb_and_ask(loaded, document, settings, [q.prompt for q in questions])
    scores = [score_answer(question, text)["score"] for question, text in zip(questions, answers)]
    return {"absorb_seconds": round(seconds, 1), "score": round(100 * statistics.mean(scores), 2),
            "questions": len(questions), "document_tokens": manifest.tokens, "training_tokens": manifest.tokens_trained,
            "coverage": manifest.coverage, "stopped_by_budget": manifest.stopped_by_budget, "steps": manifest.steps,
            "answers": answers}


def write_outputs(out: Path, points: list[dict], started: str, on_machine: str, minutes: float | None) -> None:
    lines = [
        *header("Quality per second of absorption", started, on_machine, minutes,
                command="python benchmarks/bench_quality_per_second.py (points run in parts: see each point's command)"),
        "Each point: one article absorbed under a time budget ('full': none), then its questions asked with the "
        "adapter alone (no document, no retrieval). Score: mean token F1 x 100 (an unanswerable SQuAD question "
        "scores 100 when the answer says the document does not tell). Coverage: the share of the document's "
        "sentences the training steps taken had reached.",
        "",
        "| article | recipe | budget s | absorb s | score | coverage | training tokens per document token | "
        "questions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for point in sorted(points, key=lambda p: (p["article"], p["recipe"], p["absorb_seconds"])):
        budget = "full" if point["budget"] is None else f"{point['budget']:g}"
        lines.append(
            f"| {point['article']} ({point['document_tokens']:,} tokens) | {point['recipe']} | {budget} | "
            f"{point['absorb_seconds']:.0f} | {point['score']:.1f} | {point['coverage']:.2f} | "
            f"{point['training_tokens'] / point['document_tokens']:.1f} | {point['questions']} |")
    lines += ["", "![quality per second](quality_per_second.png)", "",
              "The commands that measured the points, when they started, and their machines:", ""]
    runs = dict.fromkeys((p["command"], p["started"], p["machine"]) for p in points)
    lines += [f"- `{command}`, {started}; {on_machine}" for command, started, on_machine in runs]
    (out / "quality_per_second.md").write_text("\n".join(lines) + "\n")
    plot(points, out / "quality_per_second.png")


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    articles = sorted({point["article"] for point in points})
    figure, axes = plt.subplots(1, len(articles), figsize=(5.5 * len(articles), 4), squeeze=False)
    for axis, article in zip(axes[0], articles):
        for recipe in sorted({point["recipe"] for point in points if point["article"] == article}):
            line = sorted((p for p in points if p["article"] == article and p["recipe"] == recipe),
                          key=lambda p: p["absorb_seconds"])
            axis.plot([p["absorb_seconds"] for p in line], [p["score"] for p in line], marker="o", label=recipe)
        axis.set_xscale("log")
        seconds = [p["absorb_seconds"] for p in points if p["article"] == article]
        ticks = [15 * 2**n for n in range(12) if min(seconds) / 1.3 <= 15 * 2**n <= max(seconds) * 1.3]
        axis.set_xticks(ticks, [str(tick) for tick in ticks])
        axis.minorticks_off()
        axis.set_xlabel("absorption seconds")
        axis.set_ylabel("adapter alone, token F1")
        axis.set_title(article, fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="default", help=f"comma-separated names from: {', '.join(RECIPES)}")
    parser.add_argument("--documents", default="squad:0,loogle-short:3", help="SET:INDEX of bench_quality's sets")
    parser.add_argument("--budgets", default="30,60,120,full", help="seconds per absorption; 'full': no budget")
    parser.add_argument("--limit-questions", type=int, default=40)
    parser.add_argument("--again", action="store_true", help="measure points already in the JSON file again")
    parser.add_argument("--report-only", action="store_true", help="write the report and figure from the points kept")
    parser.add_argument("--out", type=Path, default=results_dir("quality_per_second"))
    args = parser.parse_args()
    recipes = recipe_names(parser, args.recipes)
    budgets = [None if value.strip() == "full" else float(value) for value in args.budgets.split(",")]

    from lift_tool.config import load_settings
    from lift_tool.models import load_model

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "quality_per_second.json"
    points = read_json(path)["points"] if path.exists() else []
    started, on_machine, t0 = started_at(), machine(), time.monotonic()
    if args.report_only:
        write_outputs(args.out, points, started, on_machine, None)
        return
    base_settings = load_settings()
    loaded = load_model(settings=base_settings)
    for spec in args.documents.split(","):
        article = load_article(spec.strip())
        name = f"{spec.split(':')[0]}: {article.title or article.doc_id}"
        for recipe in recipes:
            for budget in budgets:
                key = (name, recipe, budget)
                if not args.again and any((p["article"], p["recipe"], p["budget"]) == key for p in points):
                    continue
                point = measure_point(loaded, article, recipe, budget, args.limit_questions, base_settings)
                point.update(article=name, recipe=recipe, budget=budget, command=command_line(), started=started,
                             machine=on_machine)
                print(f"{name} {recipe} budget {budget}: {point['score']:.1f} in {point['absorb_seconds']:.0f} s",
                      flush=True)
                points = [p for p in points if (p["article"], p["recipe"], p["budget"]) != key]
                points.append(point)
                write_json(path, {"points": points})
                write_outputs(args.out, points, started, on_machine, (time.monotonic() - t0) / 60)
    print(f"wrote {args.out / 'quality_per_second.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
