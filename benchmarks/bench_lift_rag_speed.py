"""lift+rag giving up on the adapter's answer at its first unsure token: seconds per question, with and without.

lift+rag first answers with the document's adapter and the retrieved passages. When the model gave some token of
that answer less than ``retrieval.adapter_min_probability``, the answer is set aside and the passages are read
without the adapter, as rag does. The answer set aside is never shown, so its generation stops at that token
instead of running to the end. This script asks questions of the runs that ``bench_quality.py`` left in its work
folders (their adapters and memory; run it first) both ways, in alternating order, and checks that both give the
same answers.

    python benchmarks/bench_lift_rag_speed.py [--runs qwen2.5-coder-0.5b:squad,smollm2-135m:squad] [--questions 40]
        [--work DIR] [--out DIR]

Writes benchmarks/results/lift_rag_speed/lift_rag_speed.md and lift_rag_speed.json.gz (every question's timings).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

from common import WORK, find_work_folder, header, machine, open_run, results_dir, started_at, write_json

RUNS = "qwen2.5-coder-0.5b:squad,smollm2-135m:squad"


@contextmanager
def answers_written_out(lift):
    """lift+rag as it was before giving up: the adapter's answer is written out in full, even when set aside."""
    from lift_tool.answering import Answering

    def in_full(adapters, titles, generate, on_text, give_up_below=0.0):
        return Answering._answer_with_adapters(lift.answering, adapters, titles, generate, on_text)

    lift.answering._answer_with_adapters = in_full
    try:
        yield
    finally:
        del lift.answering._answer_with_adapters


def spread(rows: list, count: int) -> list:
    """``count`` rows taken evenly from ``rows`` (so every document of the run is asked about)."""
    step = max(1, len(rows) // count)
    return rows[::step][:count]


def time_run(folder: Path, name: str, count: int) -> list[dict]:
    """Questions of the run asked with lift+rag both ways; one row per question."""
    lift, documents, questions, rag_rows = open_run(folder, name)
    asked = spread(rag_rows, count)

    def ask(row, giving_up: bool):
        question = questions[(row["doc_id"], row["index"])].prompt
        document = [documents[row["doc_id"]]["lift_doc_id"]]
        # Asked twice, the same passages would be read from the prefix cache the second time; a question is
        # asked once in use.
        lift.answering.prefix_cache.clear()
        if giving_up:
            return lift.ask(question, document, mode="lift+rag")
        with answers_written_out(lift):
            return lift.ask(question, document, mode="lift+rag")

    ask(asked[0], True)  # loads the model, the embedder and the first adapter: not part of any timing
    out = []
    for number, row in enumerate(asked, 1):
        # Alternate which way goes first, so that a machine slowing down or speeding up favours neither.
        order = (True, False) if number % 2 else (False, True)
        answers = {giving_up: ask(row, giving_up) for giving_up in order}
        new, old = answers[True], answers[False]
        out.append({"doc_id": row["doc_id"], "index": row["index"], "mode_used": new.mode,
                    "same_answer": (new.text, new.mode) == (old.text, old.mode),
                    "giving_up_s": round(new.seconds, 3), "written_out_s": round(old.seconds, 3)})
        print(f"  [{number}/{len(asked)}] {new.mode:8} {old.seconds:.2f} s -> {new.seconds:.2f} s", flush=True)
    return out


def summarise(rows: list[dict]) -> dict:
    """Medians and means of both ways, over every question and over those whose adapter answer was set aside."""
    set_aside = [row for row in rows if row["mode_used"] == "rag"]

    def medians(some: list[dict]) -> dict:
        if not some:
            return {"questions": 0}
        new = statistics.median(row["giving_up_s"] for row in some)
        old = statistics.median(row["written_out_s"] for row in some)
        return {"questions": len(some), "written_out_median_s": round(old, 2), "giving_up_median_s": round(new, 2),
                "ratio": round(new / old, 2),
                "written_out_mean_s": round(statistics.fmean(row["written_out_s"] for row in some), 2),
                "giving_up_mean_s": round(statistics.fmean(row["giving_up_s"] for row in some), 2)}

    return {"all": medians(rows), "set_aside": medians(set_aside),
            "same_answers": sum(row["same_answer"] for row in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=RUNS, help="MODEL:SET pairs (sets of bench_quality.py)")
    parser.add_argument("--questions", type=int, default=40, help="questions per run, taken evenly from its rows")
    parser.add_argument("--work", type=Path, default=WORK, help="bench_quality.py's --work")
    parser.add_argument("--out", type=Path, default=results_dir("lift_rag_speed"))
    args = parser.parse_args()

    started = started_at()
    description = machine()
    t0 = time.monotonic()
    results = {}
    for run in args.runs.split(","):
        model, name = run.split(":")
        folder = find_work_folder(args.work, model, name)
        print(f"{run}: {folder}", flush=True)
        rows = time_run(folder, name, args.questions)
        results[run] = {"summary": summarise(rows), "rows": rows}
    minutes = (time.monotonic() - t0) / 60

    lines = [
        *header("lift+rag: giving up on an unsure adapter answer", started, description, minutes),
        "lift+rag answers with the document's adapter and the retrieved passages, and sets that answer aside for "
        "the passages alone (as rag) when the model gave one of its tokens less than "
        "`retrieval.adapter_min_probability`. *Giving up*: the adapter's answer stops at that token, since the rest "
        "would be thrown away. *Written out*: the adapter's answer runs to its end first, as before. Each question "
        "was asked both ways, one after the other, in alternating order, with the adapters and memory of a "
        "`bench_quality.py` run. Seconds: the whole `Lift.ask`, retrieval included.",
        "",
        "| run | questions | same answers | set aside | written out, median s | giving up, median s | ratio | "
        "set aside: written out, median s | set aside: giving up, median s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, result in results.items():
        every, aside = result["summary"]["all"], result["summary"]["set_aside"]
        aside_cells = (f"{aside['written_out_median_s']:.2f} | {aside['giving_up_median_s']:.2f} | {aside['ratio']:.2f}"
                       if aside["questions"] else "- | - | -")
        lines.append(f"| {run} | {every['questions']} | {result['summary']['same_answers']} | {aside['questions']} | "
                     f"{every['written_out_median_s']:.2f} | {every['giving_up_median_s']:.2f} | {every['ratio']:.2f} | "
                     f"{aside_cells} |")
    lines += ["", "Means (s): " + "; ".join(
        f"{run} written out {r['summary']['all']['written_out_mean_s']:.2f}, giving up "
        f"{r['summary']['all']['giving_up_mean_s']:.2f}" for run, r in results.items()) + ".", ""]
    lines += ["Rows (every question's seconds both ways): `lift_rag_speed.json.gz`.", ""]
    write_json(args.out / "lift_rag_speed.json.gz", results)
    (args.out / "lift_rag_speed.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
