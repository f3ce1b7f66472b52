"""Compare absorption recipes on the demo document: closed-book accuracy on its hand-written questions against
training cost. This is how the defaults in ``lift_tool/config.py`` were chosen.

    python benchmarks/bench_recipe.py [--recipes default,qa3,...] [--out DIR]

Each recipe is a set of overrides of the default training settings; every recipe absorbs the same document
with the same seed on one loaded model, then answers the questions with the adapter and no document in the
prompt. Writes benchmarks/results/recipe/recipe.md and recipe.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from common import header, machine, merged, results_dir, started_at, write_json

RECIPES = {  # name: (what it changes, overrides of the default settings: "training" and "lora")
    "default": ("the defaults", {}),
    "all-layers": ("LoRA on every layer", {"lora": {"layer_fraction": 1.0}}),
    "upper-third": ("LoRA on the upper third of the layers", {"lora": {"layer_fraction": 1 / 3}}),
    "qa3": ("fewer question passes (qa 3)", {"training": {"mix": {"qa": 3.0}}}),
    "questions-only": ("closed-book questions only",
                       {"training": {"mix": {"qa": 5.0, "qa_long": 0.0, "segments": 0.0, "contextual": 0.0}}}),
    "more-text": ("more raw text (segments 1, contextual 1)", {"training": {"mix": {"segments": 1.0, "contextual": 1.0}}}),
    "lr1e-3": ("lower learning rate (1e-3)", {"training": {"learning_rate": 1e-3}}),
    "batch2048": ("larger micro-batches (2,048 tokens)", {"training": {"batch_tokens": 2048}}),
}


def run(recipes: list[str], out: Path) -> None:
    from peft import PeftModel

    from lift_tool.training.absorb import absorb
    from lift_tool.generation import answer
    from lift_tool.config import load_settings
    from lift_tool.demo import is_right
    from lift_tool.sample import sample_document_path, sample_questions
    from lift_tool.documents import read_document
    from lift_tool.models import load_model

    when, on_machine, t0 = started_at(), machine(), time.monotonic()
    document = read_document(sample_document_path())
    questions = sample_questions()
    base_settings = load_settings()
    loaded = load_model(settings=base_settings)
    rows = []
    for name in recipes:
        description, overrides = RECIPES[name]
        settings = load_settings(**merged(base_settings.model_dump(include={"training", "lora"}), overrides))
        with tempfile.TemporaryDirectory() as folder:
            started = time.monotonic()
            manifest = absorb(document, loaded, settings, Path(folder), progress=False)
            seconds = time.monotonic() - started
            adapted = PeftModel.from_pretrained(loaded.model, folder)
            right = sum(
                is_right(answer(adapted, loaded.tokenizer, q["question"], [document.title], max_new_tokens=32), q["answers"])
                for q in questions
            )
            loaded.model = adapted.unload()
        rows.append({
            "recipe": name,
            "description": description,
            "overrides": overrides,
            "right": right,
            "questions": len(questions),
            "absorb_seconds": round(seconds, 1),
            "training_tokens": manifest.tokens_trained,
            "tokens_per_second": manifest.tokens_per_second,
            "steps": manifest.steps,
        })
        print(f"{name}: {right}/{len(questions)} right, {seconds:.0f} s, {manifest.tokens_trained} tokens", flush=True)

    command = shlex.join(["python", "benchmarks/bench_recipe.py", *sys.argv[1:]])
    write_json(out / "recipe.json", {"machine": on_machine, "started": when, "command": command,
                                     "document_tokens": manifest.tokens, "rows": rows})
    lines = [
        *header("Absorption recipes on the demo document", when, on_machine, (time.monotonic() - t0) / 60,
                command=command),
        f"Document: `lift_tool/data/harrowmere.md` ({manifest.tokens:,} tokens of invented facts). Questions: the "
        f"{len(questions)} hand-written questions of `harrowmere_questions.json`, never trained on, asked with the "
        "adapter and no document in the prompt; right when the answer contains an accepted answer. Same seed "
        "for every recipe; one run each, so one question either way is within noise.",
        "",
        "| recipe | what it changes | right | absorb s | training tokens | tokens/s | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['recipe']} | {row['description']} | {row['right']}/{row['questions']} | "
                     f"{row['absorb_seconds']} | {row['training_tokens']:,} | {row['tokens_per_second']:.0f} | {row['steps']} |")
    (out / "recipe.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names from RECIPES")
    parser.add_argument("--out", type=Path, default=results_dir("recipe"))
    args = parser.parse_args()
    names = [name.strip() for name in args.recipes.split(",") if name.strip()]
    unknown = [name for name in names if name not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    run(names, args.out)


if __name__ == "__main__":
    main()
