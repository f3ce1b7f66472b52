"""Questions over two documents: combine the adapters, or answer per document and merge? Chosen by measurement.

Each question is about one of two documents and is asked with both documents given (the situation of an agent
that holds several documents and does not know which one answers), in lift mode (adapters only, nothing in the
prompt), four ways:

  own          only the adapter of the document that holds the answer (the reference: no second adapter)
  cat          PEFT-style concatenation of both adapters into one (ranks add up; Lift's "combine")
  linear       the weighted average of both adapters (equal weights, same rank)
  per-document each adapter answers with its own document's title; the answers are joined (Lift's "per-document")
  per-document, abstentions dropped
               the same answers, joined without those that say the document does not tell (unless all do):
               a merge rule Lift could use

Scored by token F1 of the whole answer (what the caller receives, less the "title: " labels of per-document
answers; the joined per-document answer is longer, so its precision suffers), by containment of a gold answer, and for per-document also by the best of its parts
(F1 if the caller could pick the right part). Sets:

  harrowmere    the bundled sample (lift_tool/data/harrowmere.md) and its hand-written questions, paired with the
                first SQuAD article of ../shared/data/longdoc_qa_dev.jsonl
  squad pairs   pairs of SQuAD articles from that file; the first --questions answerable questions of each
                article, asked with both articles of its pair

Adapters come from --home (default: the memory of bench_quality.py's squad run, so its adapters are reused when the
settings match; otherwise the documents are absorbed here, with --budget-seconds if given).

    python benchmarks/bench_multi_document.py [--model smollm2-135m] [--pairs 1] [--questions 10]
                                              [--budget-seconds S] [--home DIR] [--out DIR] [--report-only]

Writes benchmarks/results/multi_document/MODEL.md and MODEL.json.gz (every question, strategy, answer and score).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

from common import (
    DEV_SET, TIMING_NOTE, WORK, command_line, machine, model_tag, quality_work_dir, read_json, results_dir, started_at,
    write_json,
)

STRATEGIES = ("own", "cat", "linear", "per-document")
MERGED = "per-document, abstentions dropped"  # computed from the per-document answers, no extra generation


def load_sets(pairs: int, per_doc: int) -> list[dict]:
    """[{name, documents: [(key, title, text)], questions: [(question, answers, key of the answering doc)]}]"""
    from lift_tool.sample import sample_document_path, sample_questions
    from lift_tool.eval import load_dataset

    squad = load_dataset(DEV_SET)
    squad = [d for d in squad if d.doc_id.startswith("squad2dev_")]

    def answerable(doc):
        return [(q.question, q.answers, doc.doc_id) for q in doc.questions if not q.unanswerable][:per_doc]

    harrowmere = ("harrowmere", None, sample_document_path().read_text(encoding="utf-8"))
    first = squad[0]
    sets = [{
        "name": f"harrowmere + {first.doc_id}",
        "documents": [harrowmere, (first.doc_id, first.title, first.text)],
        "questions": [(q["question"], q["answers"], "harrowmere") for q in sample_questions()] + answerable(first),
    }]
    for a, b in list(zip(squad, squad[1:] + squad[:1]))[:pairs]:
        sets.append({
            "name": f"{a.doc_id} + {b.doc_id}",
            "documents": [(a.doc_id, a.title, a.text), (b.doc_id, b.title, b.text)],
            "questions": answerable(a) + answerable(b),
        })
    return sets


def run(args) -> list[dict]:
    from lift_tool.generation import answer
    from lift_tool.config import load_settings
    from lift_tool.eval import score_answer, EvalQuestion
    from lift_tool.lift import Lift

    settings = load_settings(model=args.model, device=args.device, max_new_tokens=args.max_new_tokens)
    home = args.home or quality_work_dir(WORK, args.model, "squad", settings) / "memory"
    settings = settings.model_copy(update={"home": home})
    lift = Lift(settings)
    loaded = lift.loaded
    rows = []
    absorbed: dict[str, tuple[str, str]] = {}  # key -> (lift doc id, title)
    for item in load_sets(args.pairs, args.questions):
        for key, title, text in item["documents"]:
            if key not in absorbed:
                print(f"absorbing (or reusing) {key} ...", file=sys.stderr, flush=True)
                result = lift.absorb(text, title=title, budget_seconds=args.budget_seconds, progress=True)
                absorbed[key] = (result.document.doc_id, result.document.title)
        keys = [key for key, _, _ in item["documents"]]
        ids = [absorbed[key][0] for key in keys]
        titles = [absorbed[key][1] for key in keys]
        adapters = {key: lift.registry.adapter_for(absorbed[key][0], loaded.fingerprint, loaded.name) for key in keys}
        for number, (question, answers, owner) in enumerate(item["questions"]):
            gold = EvalQuestion(number, question, "extractive", list(answers))
            for strategy in STRATEGIES:
                started = time.monotonic()
                parts = None
                if strategy == "own":
                    text = lift.ask(question, [absorbed[owner][0]], mode="lift").text
                elif strategy in ("cat", "per-document"):
                    how = "combine" if strategy == "cat" else "per-document"
                    lift.settings = lift.settings.model_copy(update={"multi_document": how})
                    text = lift.ask(question, ids, mode="lift").text
                    if strategy == "per-document":  # "title: answer" per document; scored without the titles,
                        # whose words would otherwise count as answer tokens
                        parts = [p.strip() for p in re.split("|".join(re.escape(f"{t}: ") for t in titles), text)]
                        text = "\n".join(p for p in parts if p)
                else:  # linear: the pool's weighted combination, which Lift.ask does not offer
                    with lift.lock, lift.pool.combine([adapters[k] for k in keys], how="linear") as model:
                        text = answer(model, loaded.tokenizer, question, titles, None, settings.max_new_tokens)
                seconds = time.monotonic() - started
                scores = score_answer(gold, text)
                row = {"set": item["name"], "question": question, "answers": list(answers), "owner": owner,
                       "strategy": strategy, "prediction": text, "f1": scores["f1"], "contains": scores["contains"],
                       "seconds": round(seconds, 3)}
                if parts is not None:
                    row["parts"] = [part for part in parts if part]
                    row["best_part_f1"] = max((score_answer(gold, part)["f1"] for part in parts if part), default=0.0)
                rows.append(row)
            print(f"  {number + 1}/{len(item['questions'])} {question[:60]!r}", file=sys.stderr, flush=True)
    return rows


def with_merged(rows: list[dict]) -> list[dict]:
    """The rows plus, for every per-document answer, the same answer without its abstaining parts."""
    from lift_tool.eval import EvalQuestion, score_answer
    from lift_tool.prompts import NOT_IN_DOCUMENT, is_abstention

    merged = []
    for row in rows:
        if row["strategy"] != "per-document":
            continue
        parts = row.get("parts") or row["prediction"].split("\n")
        text = "\n".join(part for part in parts if not is_abstention(part)) or NOT_IN_DOCUMENT
        scores = score_answer(EvalQuestion(0, row["question"], "extractive", row["answers"]), text)
        merged.append({**row, "strategy": MERGED, "prediction": text, "f1": scores["f1"],
                       "contains": scores["contains"]})
    return rows + merged


def summarise(rows: list[dict], name: str | None = None) -> dict[str, dict]:
    summary = {}
    for strategy in STRATEGIES + (MERGED,):
        mine = [r for r in rows if r["strategy"] == strategy and (name is None or r["set"] == name)]
        if not mine:
            continue
        summary[strategy] = {
            "n": len(mine),
            "f1": round(100 * statistics.fmean(r["f1"] for r in mine), 1),
            "contains": round(100 * statistics.fmean(r["contains"] for r in mine), 1),
            "best_part_f1": round(100 * statistics.fmean(r["best_part_f1"] for r in mine), 1)
            if all("best_part_f1" in r for r in mine) else None,
            "median_s": round(statistics.median(r["seconds"] for r in mine), 2),
        }
    return summary


def render(rows, args, started, wall, description) -> str:
    from lift_tool.config import load_settings

    rows = with_merged(rows)
    settings = load_settings(model=args.model)
    lines = [
        "# Questions over two documents: combined adapters or one answer per document",
        "",
        f"Command: `{command_line()}` (from the repository root), {started}, {wall / 60:.1f} min.",
        "",
        f"Machine: {description}.",
        "",
        TIMING_NOTE,
        "",
        f"Model `{args.model}`; training fingerprint `{settings.training_fingerprint()}`"
        + (f"; absorption budget {args.budget_seconds:g} s" if args.budget_seconds else "")
        + f"; at most {args.max_new_tokens} new tokens.",
        "",
    ]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    for name in [None] + sets:
        summary = summarise(rows, name)
        lines += [f"## {'All questions' if name is None else name}", "",
                  "| strategy | n | F1 (whole answer) | contains gold | F1 of the best part | s/question (median) |",
                  "|---|---|---|---|---|---|"]
        for strategy, s in summary.items():
            lines.append(f"| {strategy} | {s['n']} | {s['f1']} | {s['contains']} | "
                         f"{'-' if s['best_part_f1'] is None else s['best_part_f1']} | {s['median_s']} |")
        lines.append("")
    overall = summarise(rows)
    choice = max(("cat", "per-document"), key=lambda s: (overall[s]["f1"], overall[s]["contains"]))
    best = max(("cat", "linear", "per-document", MERGED), key=lambda s: (overall[s]["f1"], overall[s]["contains"]))
    lines += [
        "## Choice",
        "",
        f"Between Lift's two settings as they are, **{'combine' if choice == 'cat' else 'per-document'}** scores "
        f"higher on the whole answer (F1 {overall['cat']['f1']} combine vs {overall['per-document']['f1']} "
        f"per-document; contains {overall['cat']['contains']} vs {overall['per-document']['contains']}). "
        f"Best of all strategies by F1: **{best}** (F1 {overall[best]['f1']}, contains {overall[best]['contains']}). "
        f"Linear averaging: F1 {overall['linear']['f1']}; the answering document's own adapter alone: F1 "
        f"{overall['own']['f1']} (what a perfect choice of document would give).",
        "",
        f"Rows: `{model_tag(args.model)}.json.gz` (every question, strategy, answer and score).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pairs", type=int, default=1, help="pairs of SQuAD articles, besides the harrowmere set")
    parser.add_argument("--questions", type=int, default=10, help="answerable questions per SQuAD article")
    parser.add_argument("--budget-seconds", type=float)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--home", type=Path)
    parser.add_argument("--out", type=Path, default=results_dir("multi_document"))
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the saved rows")
    args = parser.parse_args()

    name = model_tag(args.model)
    if args.report_only:  # the report again from the rows of the last run (its command, time and machine)
        saved = read_json(args.out / f"{name}.json.gz")
        sys.argv = saved["command"]
        args = parser.parse_args(saved["command"][1:])
        (args.out / f"{name}.md").write_text(render(saved["rows"], args, saved["started"], saved["seconds"],
                                                    saved["machine"]))
        print(f"wrote {args.out / (name + '.md')}")
        return
    started = started_at()
    description = machine()
    t0 = time.monotonic()
    rows = run(args)
    write_json(args.out / f"{name}.json.gz", {"command": sys.argv, "started": started, "machine": description,
                                              "seconds": time.monotonic() - t0, "rows": rows})
    (args.out / f"{name}.md").write_text(render(rows, args, started, time.monotonic() - t0, description))
    print(f"wrote {args.out / (name + '.md')}")


if __name__ == "__main__":
    main()
