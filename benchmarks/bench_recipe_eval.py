"""Compare absorption recipes on a real article: token F1 of the adapter alone (no document in the prompt, no
retrieval) against absorption time, through ``lift eval``. This is how the defaults for larger models were chosen
(``settings_for_model``); ``bench_recipe.py`` does the same for the default model on the demo document.

    python benchmarks/bench_recipe_eval.py [--model qwen2.5-coder-0.5b] [--doc squad2dev_Amazon_rainforest]
        [--limit-questions 20] [--recipes upper-half,all-layers,...] [--work DIR] [--out DIR]

Every recipe names its layers explicitly, so the table keeps its meaning when the defaults change. Each recipe runs
in its own folder under --work, so an interrupted run resumes. Writes benchmarks/results/recipe_eval/MODEL.md and
MODEL.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import DEV_SET, WORK, command_line, header, machine, merged, model_tag, results_dir, started_at, write_json

DATA = DEV_SET
UPPER_HALF = {"layer_fraction": 0.5}
ALL_LAYERS = {"layer_fraction": 1.0}
RECIPES = {  # name: (what it changes, overrides of the default settings); the learning rate is the model's default
    "upper-half": ("LoRA on the upper half of the layers", {"lora": UPPER_HALF}),
    "all-layers": ("LoRA on every layer", {"lora": ALL_LAYERS}),
    "lr2e-3": ("upper half, learning rate 2e-3", {"lora": UPPER_HALF, "training": {"learning_rate": 2e-3}}),
    "epochs2": ("upper half, two epochs", {"lora": UPPER_HALF, "training": {"epochs": 2.0}}),
    "all-layers-epochs2": ("every layer, two epochs", {"lora": ALL_LAYERS, "training": {"epochs": 2.0}}),
    "all-layers-lr2e-3": ("every layer, learning rate 2e-3",
                          {"lora": ALL_LAYERS, "training": {"learning_rate": 2e-3}}),
    "written4": ("every layer, 4 questions per passage written by the model",
                 {"lora": ALL_LAYERS, "training": {"written_questions": 4}}),
    "restate2": ("every layer, rule questions about 2 restatements per passage written by the model",
                 {"lora": ALL_LAYERS, "training": {"restatements": 2}}),
    "restate2-qa2.5": ("as restate2, each question asked half as often (mix.qa 2.5): about all-layers' steps",
                       {"lora": ALL_LAYERS, "training": {"restatements": 2, "mix": {"qa": 2.5}}}),
}


def f1_per_document(result) -> dict[str, float | None]:
    """The adapter's F1 on each document alone, as ``lift eval`` summarises it."""
    from lift_tool.eval import summarise

    doc_ids = dict.fromkeys(row["doc_id"] for row in result.rows)
    return {doc_id: summarise([row for row in result.rows if row["doc_id"] == doc_id], result.documents)["lift"]["f1"]
            for doc_id in doc_ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--doc", default="squad2dev_Amazon_rainforest", help="document id (a shell pattern) in the dev set")
    parser.add_argument("--limit-questions", type=int, default=20)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=results_dir("recipe_eval"))
    args = parser.parse_args()
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    if unknown := [n for n in names if n not in RECIPES]:
        parser.error(f"unknown recipe(s) {unknown}: choose from {', '.join(RECIPES)}")

    from lift_tool.config import load_settings
    from lift_tool.eval import run_evaluation

    description = machine()
    started = started_at()
    begun = time.monotonic()
    tag = model_tag(args.model)
    defaults = load_settings(model=args.model).model_dump(include={"training", "lora"})
    rows = []
    for name in names:
        what, overrides = RECIPES[name]
        settings = load_settings(model=args.model, **merged(defaults, overrides))
        print(f"== {name}: {what}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        result = run_evaluation(settings, DATA, ["lift"], args.work / f"recipe-{tag}-{name}",
                                limit_questions=args.limit_questions, select=args.doc,
                                label=f"recipe {name} ({args.model})")
        lift = result.summary["lift"]
        rows.append({"recipe": name, "what": what, "overrides": overrides, "f1": lift["f1"], "em": lift["em"],
                     "answerable": lift["n_free"], "distinct": lift["distinct"], "abstention": lift["abstention"],
                     "f1_per_document": f1_per_document(result), "absorb_seconds": lift["absorb_s"],
                     "steps": sum(document.get("steps") or 0 for document in result.documents.values()),
                     "minutes_this_run": round((time.monotonic() - t0) / 60, 1)})

    command = command_line()
    write_json(args.out / f"{tag}.json", {"command": command, "started": started, "machine": description, "rows": rows})
    lines = [
        *header(f"Absorption recipes on a real article: `{args.model}`", started, description,
                (time.monotonic() - begun) / 60, command=command),
        f"Documents `{args.doc}` of `{DATA.name}`, the first {args.limit_questions} questions of each (never trained on), "
        "answered by the adapter alone with no document in the prompt. F1 and EM on the answerable ones (SQuAD "
        "normalisation); one run per recipe with the same seed, so with n answerable questions in all one question "
        "moves the F1 by up to 100/n points. Absorption seconds (summed over the documents) "
        "come from each document's manifest: a resumed run reuses it.",
        "",
        "| recipe | what it changes | F1 | EM | F1 per document | answerable | distinct answers % "
        "| abstains on unanswerable % | absorption s | steps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        per_document = ", ".join(f"{doc_id.removeprefix('squad2dev_')} {f1}"
                                 for doc_id, f1 in row["f1_per_document"].items())
        lines.append(f"| {row['recipe']} | {row['what']} | {row['f1']} | {row['em']} | {per_document} | "
                     f"{row['answerable']} | {row['distinct']} | {row['abstention']} | {row['absorb_seconds']} "
                     f"| {row['steps']} |")
    (args.out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / f'{tag}.md'}")


if __name__ == "__main__":
    main()
