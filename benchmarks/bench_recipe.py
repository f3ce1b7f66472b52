"""Compare absorption recipes on the demo document: closed-book accuracy on its hand-written questions against
training cost, over several training seeds. This is how the defaults in ``lift_tool/config.py`` are chosen.

    python benchmarks/bench_recipe.py [--recipes default,qa3,...] [--seeds 0,1,2] [--row NAME] [--plan-only] [--out DIR]

Each recipe is a set of overrides of the default training settings; every recipe absorbs the same document on
one loaded model with each seed, then answers the questions with the adapter and no document in the prompt.
Rows are kept in recipe.json by name, so the recipes can be run in parts (a later run replaces a row of the same
name); recipe.md is written from all of them. ``--row NAME`` stores a single recipe under another name, for a
row measured on an earlier commit (run this script with that commit's lift_tool installed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import command_line, header, machine, merged, read_json, results_dir, started_at, write_json

RECIPES = {  # name: (what it changes, overrides of the default settings: "training" and "lora")
    "default": ("the defaults", {}),
    "fixed-chats": ("the same closed-book chats every pass, whose repeats skip the frozen layers (cache on)",
                    {"training": {"regroup_questions": False}}),
    "no-layer-cache": ("the same closed-book chats every pass, frozen layers run on every pass (cache off)",
                       {"training": {"regroup_questions": False, "frozen_layer_cache_mb": 0}}),
    "all-layers": ("LoRA on every layer", {"lora": {"layer_fraction": 1.0}}),
    "upper-third": ("LoRA on the upper third of the layers", {"lora": {"layer_fraction": 1 / 3}}),
    "qa4": ("fewer question passes (qa 4)", {"training": {"mix": {"qa": 4.0}}}),
    "qa3": ("fewer question passes (qa 3)", {"training": {"mix": {"qa": 3.0}}}),
    "qa3-lr6e-3": ("qa 3 at learning rate 6e-3", {"training": {"mix": {"qa": 3.0}, "learning_rate": 6e-3}}),
    "qa2-lr8e-3": ("qa 2 at learning rate 8e-3", {"training": {"mix": {"qa": 2.0}, "learning_rate": 8e-3}}),
    "questions2-qa3-lr6e-3": ("2 rule questions per sentence, qa 3, learning rate 6e-3",
                              {"training": {"questions_per_sentence": 2, "mix": {"qa": 3.0}, "learning_rate": 6e-3}}),
    "distill": ("context distillation, weight 1 (the teacher: the model with the answer's passage in its prompt)",
                {"training": {"distill": 1.0}}),
    "distill-qa3": ("context distillation, weight 1, qa 3", {"training": {"distill": 1.0, "mix": {"qa": 3.0}}}),
    "distill-questions2": ("context distillation, weight 1, 2 rule questions per sentence",
                           {"training": {"distill": 1.0, "questions_per_sentence": 2}}),
    "written4": ("4 questions per passage of 3 sentences written by the model itself, beside the rules' (kept when "
                 "its own answer with the passage comes from the passage)", {"training": {"written_questions": 4}}),
    "loraplus4": ("LoRA+: each B matrix at 4 times the learning rate", {"training": {"lora_b_lr_ratio": 4.0}}),
    "questions2-loraplus4": ("2 rule questions per sentence, LoRA+ ratio 4",
                             {"training": {"questions_per_sentence": 2, "lora_b_lr_ratio": 4.0}}),
    "questions2-loraplus16": ("2 rule questions per sentence, LoRA+ ratio 16",
                              {"training": {"questions_per_sentence": 2, "lora_b_lr_ratio": 16.0}}),
    "lr1e-3-loraplus16": ("learning rate 1e-3 with LoRA+ ratio 16 (B at 1.6e-2)",
                          {"training": {"learning_rate": 1e-3, "lora_b_lr_ratio": 16.0}}),
    "qa3-lr1e-3-loraplus16": ("qa 3, learning rate 1e-3 with LoRA+ ratio 16",
                              {"training": {"mix": {"qa": 3.0}, "learning_rate": 1e-3, "lora_b_lr_ratio": 16.0}}),
    "qa3-loraplus4": ("qa 3, LoRA+ ratio 4", {"training": {"mix": {"qa": 3.0}, "lora_b_lr_ratio": 4.0}}),
    "conv16": ("16 questions per training chat", {"training": {"qa_per_conversation": 16}}),
    "questions2": ("2 rule questions per sentence (4)", {"training": {"questions_per_sentence": 2}}),
    "no-long": ("no long-context examples (qa_long, contextual 0)", {"training": {"mix": {"qa_long": 0.0, "contextual": 0.0}}}),
    "questions-only": ("closed-book questions only",
                       {"training": {"mix": {"qa": 5.0, "qa_long": 0.0, "segments": 0.0, "contextual": 0.0}}}),
    "more-text": ("more raw text (segments 1, contextual 1)", {"training": {"mix": {"segments": 1.0, "contextual": 1.0}}}),
    "lr1e-3": ("lower learning rate (1e-3)", {"training": {"learning_rate": 1e-3}}),
    "batch2048": ("larger micro-batches (2,048 tokens)", {"training": {"batch_tokens": 2048}}),
}


def recipe_names(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The recipes named in ``text`` (comma-separated); an unknown name is the command line's error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    return names


def plan_shares(loaded, document, settings) -> dict:
    """Where a recipe's training tokens go (seed 0's plan): tokens per document token by kind of example, the
    share that carries a loss, the share of padding in the micro-batches, and the questions trained on (those the
    model wrote itself among them)."""
    from lift_tool.training.absorb import setup

    plan = setup(document, loaded, settings)
    by_kind: dict[str, int] = {}
    for batch in plan.micro_batches:
        for example in batch:
            by_kind[example.kind] = by_kind.get(example.kind, 0) + len(example)
    tokens = sum(by_kind.values())
    padded = sum(max(len(example) for example in batch) * len(batch) for batch in plan.micro_batches)
    labelled = sum(example.target_tokens for batch in plan.micro_batches for example in batch)
    return {"per_document_token": {kind: round(count / plan.document_tokens, 2) for kind, count in by_kind.items()},
            "labelled_share": round(labelled / tokens, 3), "padding_share": round(1 - tokens / padded, 4),
            "questions": sum(pair.answerable for pair in plan.qa_pairs),
            "written": sum(pair.form == "written" for pair in plan.qa_pairs)}


def recipe_settings(base_settings, overrides: dict):
    """``base_settings`` with a recipe's overrides of its training and LoRA settings laid over them."""
    from lift_tool.config import load_settings

    return load_settings(**merged(base_settings.model_dump(include={"training", "lora"}), overrides))


def absorb_and_ask(loaded, document, settings, questions: list[str]) -> tuple:
    """Absorb ``document`` into a temporary adapter, ask ``questions`` with it and no document in the prompt,
    and take the adapter off again: (manifest, absorption seconds, answers)."""
    from peft import PeftModel

    from lift_tool.generation import answer
    from lift_tool.training.absorb import absorb

    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        manifest = absorb(document, loaded, settings, Path(folder), progress=False)
        seconds = time.monotonic() - started
        adapted = PeftModel.from_pretrained(loaded.model, folder)
        answers = [answer(adapted, loaded.tokenizer, question, [document.title], max_new_tokens=32)
                   for question in questions]
        loaded.model = adapted.unload()
    return manifest, seconds, answers


def measure(name: str, overrides: dict, seeds: list[int], loaded, document, questions, base_settings) -> dict:
    """Absorb ``document`` with the recipe once per seed; the adapter's right answers, time and tokens."""
    from lift_tool.demo import is_right

    runs = []
    shares = plan_shares(loaded, document, recipe_settings(base_settings, overrides))
    for seed in seeds:
        settings = recipe_settings(base_settings, merged(overrides, {"training": {"seed": seed}}))
        manifest, seconds, answers = absorb_and_ask(loaded, document, settings, [q["question"] for q in questions])
        right = sum(is_right(text, q["answers"]) for text, q in zip(answers, questions))
        runs.append({"seed": seed, "right": right, "absorb_seconds": round(seconds, 1),
                     "training_tokens": manifest.tokens_trained, "tokens_per_second": manifest.tokens_per_second,
                     "steps": manifest.steps})
        print(f"{name} seed {seed}: {right}/{len(questions)} right, {seconds:.0f} s, {manifest.tokens_trained} tokens",
              flush=True)
    return {"recipe": name, "overrides": overrides, "questions": len(questions), "document_tokens": manifest.tokens,
            "runs": runs, "plan": shares}


def write_report(out: Path, rows: dict[str, dict], started: str, on_machine: str, minutes: float | None) -> None:
    lines = [
        *header("Absorption recipes on the demo document", started, on_machine, minutes,
                command="python benchmarks/bench_recipe.py (rows run in parts: see each row's command in recipe.json)"),
        "Document: `lift_tool/data/harrowmere.md` (1,954 tokens of invented facts). Questions: the 16 hand-written "
        "questions of `harrowmere_questions.json`, never trained on, asked with the adapter and no document in the "
        "prompt; right when the answer contains an accepted answer. Each recipe is absorbed once per training seed; "
        "right answers are summed over the seeds (one question either way per seed is within noise), times and "
        "rates are medians over the seeds. Training tokens per document token is the recipe's cost; tokens/s its "
        "speed on this machine.",
        "",
        "| recipe | what it changes | right (per seed) | absorb s | training tokens per document token | "
        "training tokens/s | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        runs = row["runs"]
        per_seed = ", ".join(str(run["right"]) for run in runs)
        total = sum(run["right"] for run in runs)
        tokens = statistics.median(run["training_tokens"] for run in runs) / row["document_tokens"]
        lines.append(
            f"| {row['recipe']} | {row['description']} | {total}/{row['questions'] * len(runs)} ({per_seed}) | "
            f"{statistics.median(run['absorb_seconds'] for run in runs):.0f} | {tokens:.1f} | "
            f"{statistics.median(run['tokens_per_second'] for run in runs):.0f} | "
            f"{statistics.median(run['steps'] for run in runs):.0f} |")
    kinds = ["qa", "qa_long", "qa_passages", "contextual", "segments"]
    lines += ["", "Where each recipe's training tokens go (seed 0's plan; rows measured before this table existed "
              "have none): training tokens per document token by kind of example, the share of the tokens that "
              "carries a loss, the share of padding in the micro-batches, and the answerable questions trained on, "
              "with those the model wrote itself.", "",
              "| recipe | " + " | ".join(kinds) + " | with a loss | padding | questions (written) |",
              "|---|" + "---|" * (len(kinds) + 3)]
    for row in rows.values():
        if "plan" in row:
            plan = row["plan"]
            per_kind = " | ".join(f"{plan['per_document_token'].get(kind, 0):.1f}" for kind in kinds)
            questions = f"{plan['questions']} ({plan['written']})" if "questions" in plan else "-"
            lines.append(f"| {row['recipe']} | {per_kind} | {100 * plan['labelled_share']:.0f}% | "
                         f"{100 * plan['padding_share']:.1f}% | {questions} |")
    lines += ["", "Machines and start times of the rows (each row ran as one command):", ""]
    lines += [f"- {row['recipe']}: `{row['command']}`, {row['started']}; {row['machine']}" for row in rows.values()]
    (out / "recipe.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="default", help=f"comma-separated names from: {', '.join(RECIPES)}")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--row", help="store the (single) recipe under this row name, e.g. for an earlier commit")
    parser.add_argument("--description", help="what the row under --row is")
    parser.add_argument("--plan-only", action="store_true",
                        help="only add where the tokens go to the rows of these recipes (no training)")
    parser.add_argument("--out", type=Path, default=results_dir("recipe"))
    args = parser.parse_args()
    names = recipe_names(parser, args.recipes)
    if args.row and len(names) != 1:
        parser.error("--row names one recipe's row: give one recipe")
    seeds = [int(seed) for seed in args.seeds.split(",")]

    from lift_tool.config import load_settings
    from lift_tool.documents import read_document
    from lift_tool.models import load_model
    from lift_tool.sample import sample_document_path, sample_questions

    path = args.out / "recipe.json"
    rows = {row["recipe"]: row for row in read_json(path)["rows"]} if path.with_suffix(".json").exists() else {}
    started, on_machine, t0 = started_at(), machine(), time.monotonic()
    document, questions = read_document(sample_document_path()), sample_questions()
    base_settings = load_settings()
    loaded = load_model(settings=base_settings)
    for name in names:
        description, overrides = RECIPES[name]
        if args.plan_only:
            for row in rows.values():
                if row["overrides"] == overrides:
                    row["plan"] = plan_shares(loaded, document, recipe_settings(base_settings, overrides))
            write_json(path, {"rows": list(rows.values())})
            write_report(args.out, rows, started, on_machine, None)
            continue
        row = measure(name, overrides, seeds, loaded, document, questions, base_settings)
        row_name = args.row or name
        row.update(recipe=row_name, description=args.description or description, command=command_line(),
                   started=started, machine=on_machine)
        rows[row_name] = row
        write_json(path, {"rows": list(rows.values())})
        write_report(args.out, rows, started, on_machine, (time.monotonic() - t0) / 60)
    print(f"wrote {args.out / 'recipe.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
