"""Answer quality of base, context, rag, lift and lift+rag on real long documents, and the floors of the issue.
``--methods`` adds others (``lift+context``: the adapter with the truncated document in the prompt, as the LIFT
paper's code evaluates it) or leaves some out.

Runs ``lift eval`` (``run_evaluation``) on each set, then writes a report per set:

  squad         the 3 SQuAD v2.0 dev articles of ../shared/data/longdoc_qa_dev.jsonl, the first 40 questions of each
                (extractive, some unanswerable): token F1 / EM, abstention
  quality       the 3 QuALITY articles of the same file (41 multiple-choice questions): accuracy
  loogle-short  ../shared/data/loogle/shortdep_qa.jsonl (5 documents of 10k-20k words, 80 questions): token F1
  loogle-long   ../shared/data/loogle/longdep_qa.jsonl (5 documents, 43 long-dependency questions): token F1

The in-context method is truncated to the model's window as in the LIFT paper (Lift.ask(mode="context") cuts the
middle of the document); --context-window sets a smaller window. LooGLE answers are free-form: the paper judged
them with GPT-4, here they are scored by token F1 and containment, so numbers are not comparable to the paper's.

Every run keeps its own memory and rows under --work (default ~/.cache/lift-tool/bench/quality-MODEL-SET-RECIPE-DTYPE,
RECIPE: the settings' training fingerprint, DTYPE: the number format the model answers in), so an interrupted
benchmark resumes and a rerun reuses the adapters; loogle-long answers from loogle-short's memory (an article of
both sets is absorbed once).
Settings come from the defaults and LIFT_* environment variables (e.g. LIFT_TRAINING__LEARNING_RATE).

    python benchmarks/bench_quality.py [--model smollm2-135m] [--sets squad,loogle-short,loogle-long]
        [--budget-seconds S] [--select PATTERN] [--limit-docs N] [--limit-questions N] [--context-window T]
        [--max-new-tokens 32] [--methods base,context,rag,lift,lift+rag] [--label LABEL] [--work DIR] [--out DIR]
        [--report-only]

Writes one file set per model and set into benchmarks/results/quality/: MODEL-SET.md (the report, with its
command, machine and recipe), MODEL-SET.json.gz (every question, method, answer and score), MODEL-SET.run.json
(what the rows depend on, and each document's absorption: with the rows, what a run on another machine goes on
from) and MODEL-SET.png (quality against cost). With --label LABEL the names are MODEL-SET-LABEL.*: a run kept
beside the current one (for example on a CPU without bf16 kernels). A LooGLE report gives each floor's paired
difference with its 95% bootstrap interval and, with --context-window, each method's F1 by where the question's
evidence lies: in the beginning and end that the truncated document keeps, or in the middle it leaves out.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import signal
import sys
import time
from pathlib import Path

from common import (
    DATA, QUALITY_SETS, TIMING_NOTE, WORK, command_line, lift_environment, machine, model_tag, quality_work_dir,
    read_json, results_dir, started_at, with_environment, write_json,
)

METHODS = ["base", "context", "rag", "lift", "lift+rag"]
SQUAD_MINUTES_FLOOR = 30


def run_settings(args):
    """The settings of a run: these arguments over the defaults and LIFT_* environment variables."""
    from lift_tool.config import load_settings

    given = {"model": args.model, "device": getattr(args, "device", None), "max_new_tokens": args.max_new_tokens,
             "context_window": args.context_window}
    return load_settings(**{name: value for name, value in given.items() if value is not None})


def run_set(name: str, args, description: str) -> Path:
    """Run one set (resuming a run left unfinished) and record how it was run next to its results."""
    from lift_tool.eval import run_evaluation

    path, select, per_doc = QUALITY_SETS[name]
    settings = run_settings(args)
    work = quality_work_dir(args.work, args.model, name, settings)
    resume_from_report(work, args, name, path, settings)
    started = started_at()
    t0 = time.monotonic()
    # LooGLE's two sets share an article (José Luis Picardo): both absorb into the short set's memory, so the long
    # set reuses its adapter instead of absorbing it again.
    memory = quality_work_dir(args.work, args.model, "loogle-short", settings) / "memory" if name.startswith(
        "loogle") else None
    run_evaluation(settings, path, args.methods.split(","), work, limit_docs=args.limit_docs,
                   limit_questions=args.limit_questions or per_doc, budget_seconds=args.budget_seconds,
                   label=f"{name} ({args.model})", select=args.select or select, memory=memory)
    training = settings.training
    fraction = settings.lora.layer_fraction
    layers = "layers chosen by model size" if fraction is None else f"the upper {fraction:.0%} of the layers"
    share = training.max_answer_share
    per_answer = ("questions per answer capped by model size" if share is None
                  else f"at most {share:g} of the questions per answer")
    write_json(work / "bench.json", {
        "command": command_line(),
        "environment": lift_environment(),
        "started": started, "minutes": round((time.monotonic() - t0) / 60, 1), "machine": description,
        "recipe": f"training fingerprint `{settings.training_fingerprint()}`: {training.epochs:g} epoch(s), learning "
                  f"rate {training.learning_rate or 'by model size'}, {training.batch_tokens} tokens per micro-batch, LoRA rank "
                  f"{settings.lora.rank} on {layers}, {per_answer}" + (f"; absorption budget {args.budget_seconds:g} s per document"
                                                         if args.budget_seconds else "; no absorption budget"),
    })
    return work


def resume_from_report(work: Path, args, name: str, path: Path, settings) -> None:
    """Start a new work folder from this run's report, where the report holds the same run: the rows it has are
    not asked again. The rows travel with the repository, the work folder does not, so a run too long for one
    machine's session goes on, a few documents at a time, on the next machine."""
    from lift_tool.eval import run_identity

    stem = report_name(args, name)
    state = read_json(args.out / f"{stem}.run.json") if (args.out / f"{stem}.run.json").is_file() else None
    if (work / "rows.jsonl").is_file() or state is None:
        return
    run = run_identity(path, settings)
    if state["run"] != {key: value for key, value in run.items() if key != "data"}:
        return  # the report is of another recipe, model or number format: this run starts afresh
    rows = read_json(args.out / f"{stem}.json.gz")
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "rows.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_json(work / "documents.json", state["documents"])
    write_json(work / "run.json", run)
    print(f"{name}: {len(rows)} answers of {len(state['documents'])} document(s) taken from {stem}.json.gz",
          file=sys.stderr)


def squad_floors(summary: dict, documents: dict, rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The SQuAD floors, over the five methods they name (a method added with --methods does not count)."""
    rows = [row for row in rows if row["method"] in METHODS]
    f1 = {method: summary.get(method, {}).get("f1") for method in METHODS}
    absorb_s = sum(d.get("absorb_wall_seconds", d.get("train_seconds", 0)) for d in documents.values())
    compute_min = (absorb_s + sum(r["latency_s"] for r in rows)) / 60
    full = 3 * 40 * len(METHODS)
    timing = f"{compute_min:.1f} min (absorption wall + answer seconds)"
    if len(rows) < full or len(documents) < 3:  # a reduced run: project to the full one, and say so
        per_doc_absorb = absorb_s / max(1, len(documents))
        compute_min = (3 * per_doc_absorb + full * sum(r["latency_s"] for r in rows) / max(1, len(rows))) / 60
        timing = (f"projected {compute_min:.1f} min from a reduced run ({len(documents)} articles, {len(rows)} "
                  f"answers): 3 x mean absorption + {full} x mean seconds per answer")
    time_floor = (f"3 articles x 40 questions x 5 methods within {SQUAD_MINUTES_FLOOR} min", timing,
                  compute_min <= SQUAD_MINUTES_FLOOR)
    unmeasured = [method for method, value in f1.items() if value is None]
    if unmeasured:  # an unfinished run: no quality floor can be judged yet
        return [("quality floors", f"not measured yet: no F1 for {', '.join(unmeasured)}", False), time_floor]
    return [
        ("lift F1 - base F1 >= 10", f"{f1['lift']:.1f} - {f1['base']:.1f} = {f1['lift'] - f1['base']:.1f}",
         f1["lift"] - f1["base"] >= 10),
        ("lift+rag F1 >= rag F1", f"{f1['lift+rag']:.1f} vs {f1['rag']:.1f}", f1["lift+rag"] >= f1["rag"]),
        ("lift F1 >= 80% of context F1", f"{f1['lift']:.1f} vs {0.8 * f1['context']:.1f} (= 0.8 x {f1['context']:.1f})",
         f1["lift"] >= 0.8 * f1["context"]),
        time_floor,
    ]


def report_name(args, name: str) -> str:
    """MODEL-SET, or MODEL-SET-LABEL for a run kept beside the current one."""
    return f"{model_tag(args.model)}-{name}" + (f"-{args.label}" if args.label else "")


def floors(name: str, summary: dict, documents: dict, rows: list[dict]) -> list[str]:
    """The floors of the evaluation issue that apply to this set, as report lines."""
    if name == "squad":
        lines = ["## Floors (SQuAD dev articles)", "", "| floor | measured | met |", "|---|---|---|"]
        for floor, measured, met in squad_floors(summary, documents, rows):
            lines.append(f"| {floor} | {measured} | {'yes' if met else '**no**'} |")
        return lines + [""]
    if name not in ("loogle-short", "loogle-long"):
        return []
    s = summary
    if any(s.get(m, {}).get("f1") is None for m in ("lift", "lift+rag", "context")):
        return [f"## Floor ({name})", "", "- not measured: no free-form questions were answered", ""]
    met = s["lift+rag"]["f1"] >= s["context"]["f1"]
    ordering = s["lift"]["f1"] > s["context"]["f1"]
    lines = [f"## Floor ({name})", "",
             f"- lift+rag F1 {s['lift+rag']['f1']} >= truncated context F1 {s['context']['f1']}: "
             f"{'yes' if met else '**no**'}",
             f"- the paper's ordering, lift above truncated context: lift {s['lift']['f1']} vs context "
             f"{s['context']['f1']}: {'yes' if ordering else 'no'}; {paired_difference(rows, 'lift', 'context')}"]
    if s.get("rag", {}).get("f1") is not None:
        above = s["lift+rag"]["f1"] >= s["rag"]["f1"] + 3
        lines.append(f"- lift+rag at least 3 above rag: {s['lift+rag']['f1']} vs {s['rag']['f1']}: "
                     f"{'yes' if above else 'no'}; {paired_difference(rows, 'lift+rag', 'rag')}")
    if s.get("lift+context", {}).get("f1") is not None:  # the adapter and the truncated document, as LIFT's code asks
        better = s["lift+context"]["f1"] > s["context"]["f1"]
        lines.append(f"- the adapter with the truncated document above the document alone: lift+context "
                     f"{s['lift+context']['f1']} vs context {s['context']['f1']}: {'yes' if better else 'no'}; "
                     f"{paired_difference(rows, 'lift+context', 'context')}")
    return lines + ["", "Difference: the mean over the questions both methods answered of one's F1 minus the "
                        "other's, with its 95% bootstrap interval (questions resampled): an interval that holds 0 "
                        "does not tell the two methods apart on these questions.", ""]


def paired_difference(rows: list[dict], method: str, other: str) -> str:
    """``method``'s F1 minus ``other``'s, question by question: the mean and its 95% bootstrap interval."""
    from lift_tool.eval.plot import bootstrap_interval

    f1: dict[tuple[str, str, int], float] = {}
    for row in rows:
        if row["method"] in (method, other) and row.get("f1") is not None:
            f1[row["method"], row["doc_id"], row["index"]] = 100 * row["f1"]
    differences = [value - f1[other, doc_id, index] for (m, doc_id, index), value in f1.items()
                   if m == method and (other, doc_id, index) in f1]
    if not differences:
        return "difference not measured"
    low, high = bootstrap_interval(differences)
    mean = sum(differences) / len(differences)
    return f"difference {mean:+.1f} F1 (95% {low:+.1f} to {high:+.1f}, n={len(differences)})"


EVIDENCE_PLACES = {  # where a question's evidence lies against the truncated document, as the report names it
    "kept": "in the kept beginning or end",
    "left out": "in the middle left out",
    "partly kept": "partly kept, partly left out",
    "not found": "not found verbatim in the document",
    "none": "the data gives none",
}


def evidence_places(name: str, settings) -> dict[tuple[str, int], str]:
    """For each question of the set, where its evidence (LooGLE's passages that answer it) lies against what
    ``context`` keeps of the document: its stored text cut to the window by removing the middle (fit_context)."""
    import re
    from bisect import bisect_right

    from transformers import AutoTokenizer

    from lift_tool.eval import load_dataset
    from lift_tool.generation import context_budget, middle_cut
    from lift_tool.models.loading import resolve_spec
    from lift_tool.segment import normalise_text

    tokenizer = AutoTokenizer.from_pretrained(resolve_spec(settings.model, settings)[1])
    places = {}
    for document in load_dataset(QUALITY_SETS[name][0]):
        text = normalise_text(document.text)  # the registry's text, the one `context` cuts
        starts = [start for start, _ in tokenizer(text, add_special_tokens=False,
                                                   return_offsets_mapping=True)["offset_mapping"]]
        for question in document.questions:
            budget = context_budget(tokenizer, settings.context_window, question.prompt, [document.title],
                                    settings.max_new_tokens)
            head, tail = middle_cut(budget)
            kept = set()
            for piece in question.evidence:  # found by its first words, whatever the white space between them
                found = re.search(r"\s+".join(map(re.escape, piece.split()[:12])), text)
                if found is None:
                    kept.add(None)
                    continue
                first = bisect_right(starts, found.start()) - 1  # the tokens the piece starts and ends in
                last = bisect_right(starts, found.start() + len(piece) - 1) - 1
                kept |= {len(starts) <= budget or token < head or token >= len(starts) - tail
                         for token in range(first, last + 1)}
            places[document.doc_id, question.index] = (
                "none" if not kept else "not found" if None in kept else
                "partly kept" if len(kept) == 2 else "kept" if True in kept else "left out")
    return places


def by_evidence(name: str, rows: list[dict], settings) -> list[str]:
    """F1 per method over the questions whose evidence lies in the part of the document that ``context`` keeps
    and over those whose evidence lies in the middle that it leaves out, as report lines: where the adapter has
    to beat the truncated document."""
    import statistics

    from lift_tool.errors import LiftError
    from lift_tool.eval import EVAL_METHODS

    heading = [f"## By where the evidence lies ({name})", ""]
    try:
        places = evidence_places(name, settings)
    except (OSError, LiftError) as err:  # --report-only on a machine without the model
        return heading + [f"- not measured: the model's tokenizer could not be loaded ({err})", ""]
    scores: dict[str, dict[str, list[float]]] = {}
    questions: dict[str, set] = {}
    for row in rows:
        if row.get("f1") is not None:
            place = places.get((row["doc_id"], row["index"]), "none")
            scores.setdefault(place, {}).setdefault(row["method"], []).append(100 * row["f1"])
            questions.setdefault(place, set()).add((row["doc_id"], row["index"]))
    if not scores:
        return heading + ["- not measured: no free-form questions were answered", ""]
    methods = [m for m in EVAL_METHODS if any(m in cells for cells in scores.values())]
    lines = heading + [
        f"F1 over the questions whose evidence lies in the part of the document that `context` keeps (its beginning "
        f"and end, cut to the {settings.context_window}-token window) or in the middle it leaves out (in an "
        "unfinished run a method may not have answered all of them).", "",
        "| evidence | questions | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for place, label in EVIDENCE_PLACES.items():
        if place in scores:
            cells = scores[place]
            lines.append(f"| {label} | {len(questions[place])} | " + " | ".join(
                f"{statistics.mean(cells[m]):.1f}" if m in cells else "-" for m in methods) + " |")
    return lines + [""]


def unfinished(name: str, rows: list[dict]) -> list[str]:
    """A line saying which documents of the set the run has not answered yet (none when it has them all)."""
    from lift_tool.eval import load_dataset

    path, select, _ = QUALITY_SETS[name]
    documents = [d.doc_id for d in load_dataset(path) if select is None or fnmatch.fnmatchcase(d.doc_id, select)]
    answered = {row["doc_id"] for row in rows}
    missing = [doc_id for doc_id in documents if doc_id not in answered]
    if not missing:
        return []
    return [f"**Unfinished run**: {len(documents) - len(missing)} of the set's {len(documents)} documents answered; "
            f"not yet: {', '.join(missing)}. Every figure below is over the documents answered. The command below, "
            "run again, goes on from this report's rows (`--select` picks the next documents).", ""]


def intro(model: str, name: str, max_new_tokens: int, context_window: int | None) -> list[str]:
    """The report's title and the lines every set's report starts with."""
    return [
        f"# Answer quality on real long documents: `{model}`, {name}",
        "",
        TIMING_NOTE,
        "",
        f"At most {max_new_tokens} new tokens per answer; in-context window "
        + (f"{context_window} tokens" if context_window else "the model's own") + ". How the set was run is under "
        "its heading below. Scoring: `lift eval`'s (SQuAD token F1 / EM on answerable questions, option letter for "
        "multiple choice, abstention on unanswerable questions).",
        "",
    ]


def render(args, name: str) -> str | None:
    """The report of one set for this model and training recipe, from the set's work folder (None: not run)."""
    from lift_tool.eval import summarise

    settings = run_settings(args)
    work = quality_work_dir(args.work, args.model, name, settings)
    if not ((work / "results.json").is_file() and (work / "report.md").is_file()):
        return None
    rows = read_json(work / "results.json")
    documents = read_json(work / "documents.json")
    stem = report_name(args, name)
    how = read_json(work / "bench.json") if (work / "bench.json").is_file() else {}
    report = (work / "report.md").read_text(encoding="utf-8").replace("\n## ", "\n### ")
    report = report.split("\n", 1)[1]  # drop the report's own title
    report = report.replace(str(DATA), "../shared/data")  # the data as the repository sees it, not this machine's path
    lines = intro(args.model, name, args.max_new_tokens, args.context_window)
    lines += unfinished(name, rows)
    lines += floors(name, summarise(rows, documents), documents, rows)
    if name in ("loogle-short", "loogle-long") and args.context_window:  # (the model's own window: not computed)
        lines += by_evidence(name, rows, settings)
    lines += [f"## {name}", "",
              f"Command: `{with_environment(how.get('command', '(not recorded)'), how.get('environment', {}))}`, "
              f"{how.get('started', '?')}, {how.get('minutes', '?')} min for that invocation (a resumed run "
              f"counts only what it did). Machine: {how.get('machine', '?')}. Recipe: {how.get('recipe', '?')}.",
              "", f"![quality against cost]({stem}.png)", "", report.strip(), "",
              f"Rows (every question, method, answer and score): `{stem}.json.gz`.", ""]
    return "\n".join(lines)


def write_set_report(args, name: str) -> bool:
    """Copy one set's rows and plot from its work folder and write its report; False when the set has not run."""
    text = render(args, name)
    if text is None:
        return False
    work = quality_work_dir(args.work, args.model, name, run_settings(args))
    stem = report_name(args, name)
    if (work / "plot.png").is_file():
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "plot.png", args.out / f"{stem}.png")
    write_json(args.out / f"{stem}.json.gz", read_json(work / "results.json"))
    run = {key: value for key, value in read_json(work / "run.json").items() if key != "data"}  # no machine path
    write_json(args.out / f"{stem}.run.json", {"run": run, "documents": read_json(work / "documents.json")})
    (args.out / f"{stem}.md").write_text(text, encoding="utf-8")
    print(f"wrote {args.out / (stem + '.md')}")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sets", default="squad,loogle-short,loogle-long")
    parser.add_argument("--budget-seconds", type=float, help="time budget per absorption")
    parser.add_argument("--limit-docs", type=int)
    parser.add_argument("--select", help="only the documents whose id matches this shell pattern (LooGLE: the title), "
                        "in place of the set's own (squad: 'squad2dev_*'); a long set can be run an article at a time")
    parser.add_argument("--limit-questions", type=int, help="questions per document (default: 40 for squad, all else)")
    parser.add_argument("--context-window", type=int, help="cut the in-context method to this many tokens")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="the answering methods, comma-separated (lift eval's: lift+context, auto...)")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=results_dir("quality"))
    parser.add_argument("--label", help="name the files MODEL-SET-LABEL: a run kept beside the current one")
    parser.add_argument("--report-only", action="store_true", help="rebuild the reports from the sets run before")
    args = parser.parse_args()

    names = [n.strip() for n in args.sets.split(",") if n.strip()]
    unknown = [n for n in names if n not in QUALITY_SETS]
    if unknown:
        parser.error(f"unknown set(s) {unknown}: choose from {', '.join(QUALITY_SETS)}")
    description = None if args.report_only else machine()
    signal.signal(signal.SIGTERM, stop)
    for name in names:
        try:
            if not args.report_only:
                print(f"== {name}", file=sys.stderr, flush=True)
                run_set(name, args, description)
        finally:
            # written after every set, so a long benchmark shows its first sets while the next ones run, and after
            # an interrupted one, whose finished rows the next run goes on from
            if not write_set_report(args, name):
                print(f"{name}: no finished run in {args.work} for these settings", file=sys.stderr)


def stop(signum, frame) -> None:
    """SIGTERM stops a run as Ctrl-C does: the absorption saves its training and the report gets the rows so far."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
