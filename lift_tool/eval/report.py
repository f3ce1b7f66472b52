"""What an evaluation reports: the summary per method, ``results.json`` and ``report.md`` (and the plot).

The report lists per method token F1 / exact match (extractive and free-form answers), accuracy (multiple
choice), abstention on unanswerable questions, seconds per question, absorption and peak memory, then the score by
question type and by document.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lift_tool.eval.methods import ADAPTER_METHODS, EVAL_METHODS
from lift_tool.eval.plot import plot
from lift_tool.eval.scoring import normalize_answer
from lift_tool.files import write_json

if TYPE_CHECKING:
    from lift_tool.config import Settings


@dataclass
class EvalResult:
    """What ``run_evaluation`` wrote: the output folder, every answer row and the summary per method."""

    out_dir: Path
    rows: list[dict]
    documents: dict[str, dict]
    summary: dict[str, dict]  # method -> aggregated metrics (see summarise)


def summarise(rows: list[dict], documents: dict[str, dict]) -> dict[str, dict]:
    """Per method: the metrics of the report. Cost per question amortises each document's absorption over the
    questions asked of that document in this run (adapter methods only)."""
    asked = {}
    for row in rows:
        asked.setdefault(row["doc_id"], set()).add(row["index"])
    summary: dict[str, dict] = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method]
        answerable = [r for r in mine if not r["unanswerable"]]
        free = [r for r in answerable if r["kind"] != "mc"]
        choice = [r for r in answerable if r["kind"] == "mc"]
        unanswerable = [r for r in mine if r["unanswerable"]]
        latencies = [r["latency_s"] for r in mine]
        costs = []
        for row in mine:
            absorb = documents.get(row["doc_id"], {}).get("train_seconds", 0.0) if method in ADAPTER_METHODS else 0.0
            costs.append(row["latency_s"] + absorb / len(asked[row["doc_id"]]))
        used_docs = {row["doc_id"] for row in mine}
        summary[method] = {
            "n": len(mine),
            "f1": _mean(100 * r["f1"] for r in free),
            "em": _mean(100 * r["em"] for r in free),
            "contains": _mean(100 * r["contains"] for r in free),
            "n_free": len(free),
            # Different answers to different questions: a recipe that collapses onto one answer scores low here.
            "distinct": _mean([100 * len({normalize_answer(r["prediction"]) for r in free}) / len(free)])
            if free else None,
            "accuracy": _mean(100 * r["correct"] for r in choice),
            "n_mc": len(choice),
            "abstention": _mean(100 * r["abstained"] for r in unanswerable),
            "n_unanswerable": len(unanswerable),
            "false_abstention": _mean(100 * r["abstained"] for r in answerable),
            "score": _mean(100 * r["score"] for r in mine),
            "median_s": round(statistics.median(latencies), 3),
            "mean_s": round(statistics.fmean(latencies), 3),
            "cost_s": round(statistics.fmean(costs), 3),
            "absorb_s": round(sum(documents.get(d, {}).get("train_seconds", 0.0) for d in used_docs), 1)
            if method in ADAPTER_METHODS else 0.0,
            "peak_rss_mib": max(r.get("peak_rss_mib", 0) for r in mine),
            "added_rss_mib": max(r.get("added_rss_mib", 0) for r in mine),
            "peak_cuda_mib": max((r["peak_cuda_mib"] for r in mine if "peak_cuda_mib" in r), default=None),
        }
        if method == "lift+rag":  # how often the adapter's answer was kept, not set aside for the passages alone
            summary[method]["adapter_kept"] = _mean(100 * (r.get("mode_used", method) == method) for r in mine)
    return summary


def _mean(values) -> float | None:
    values = list(values)
    return round(statistics.fmean(values), 2) if values else None


def write_outputs(out_dir: Path, rows: list[dict], documents: dict[str, dict], settings: "Settings", data_path: Path,
                  label: str | None = None) -> EvalResult:
    """results.json, report.md and plot.png from the rows finished so far."""
    order = {doc_id: n for n, doc_id in enumerate(documents)}
    rows = sorted(rows, key=lambda r: (order.get(r["doc_id"], len(order)), r["index"], EVAL_METHODS.index(r["method"])))
    write_json(out_dir / "results.json", rows)
    summary = summarise(rows, documents) if rows else {}
    (out_dir / "report.md").write_text(render_report(rows, documents, summary, settings, data_path, label), encoding="utf-8")
    if summary:
        try:
            plot(summary, out_dir / "plot.png", title=label or Path(data_path).name, rows=rows)
        except ImportError:
            print("lift eval: warning: matplotlib is not installed, so no plot.png (pip install matplotlib)",
                  file=sys.stderr)
    return EvalResult(out_dir, rows, documents, summary)


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_report(rows, documents, summary, settings, data_path, label=None) -> str:
    lines = [f"# Evaluation: {label or Path(data_path).name}", ""]
    lines.append(f"Data: `{data_path}`; {len(documents)} documents, {len({(r['doc_id'], r['index']) for r in rows})} "
                 f"questions answered; model `{settings.model}` in {answer_dtype(settings)}; context window "
                 f"{settings.context_window or 'the model’s own'}; max new tokens {settings.max_new_tokens}; "
                 f"retrieval: {settings.retrieval.search} search, {settings.retrieval.k} chunks.")
    lines.append("")
    if not summary:
        return "\n".join(lines + ["No answers yet."]) + "\n"
    lines += [
        "| method | n | F1 | EM | contains | distinct answers % | MC acc. | abstains on unanswerable | "
        "abstains on answerable | s/question (median) | mean | cost/question incl. absorption | absorption s | "
        "peak RSS MiB | added MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        lines.append(
            f"| {method} | {s['n']} | {_fmt(s['f1'])} | {_fmt(s['em'])} | {_fmt(s['contains'])} | {_fmt(s.get('distinct'))} | "
            f"{_fmt(s['accuracy'])} | {_fmt(s['abstention'])} | {_fmt(s['false_abstention'])} | "
            f"{s['median_s']:.2f} | {s['mean_s']:.2f} | {s['cost_s']:.2f} | {s['absorb_s']:.0f} | {s['peak_rss_mib']:.0f} | {s['added_rss_mib']:.0f} |"
        )
    first = next(iter(summary.values()))
    lines += [
        "",
        f"F1, EM and contains: {first['n_free']} answerable extractive or free-form questions per method "
        "(SQuAD normalisation, best gold answer); contains: the gold answer appears in the answer; distinct answers: "
        "different answers (after normalisation) per 100 of those questions, low when answers collapse onto one. "
        f"MC accuracy: {first['n_mc']} multiple-choice questions. Abstention: {first['n_unanswerable']} unanswerable "
        "questions (higher is better); abstains on answerable: how often the method refused a question the "
        "document answers (lower is better). Cost per question: mean seconds per answer plus, for the adapter "
        "methods, each document's absorption seconds divided by the questions asked of it in this run. Peak RSS: "
        "the largest resident memory of the process while the method answered (sampled every 20 ms, after handing "
        "memory freed by absorption back to the system); added: the most one answer added to the resident memory "
        "it started from (prompt activations, KV cache, adapter switching).",
        "",
    ]
    if summary.get("lift+rag", {}).get("adapter_kept") is not None:
        lines += [f"lift+rag kept the adapter's answer on {summary['lift+rag']['adapter_kept']:.0f}% of its questions; "
                  "on the others the model was less sure of it than "
                  f"{settings.retrieval.adapter_min_probability:g} (its least sure token) and answered from the passages "
                  "without the adapter, as rag does.", ""]
    types = sorted({r["qtype"] for r in rows})
    if len(types) > 1:
        methods = list(summary)
        lines += ["## Score by question type", "", "| type | n | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for qtype in types:
            cells = []
            for method in methods:
                scores = [100 * r["score"] for r in rows if r["qtype"] == qtype and r["method"] == method]
                cells.append(_fmt(_mean(scores)))
            n = len({(r["doc_id"], r["index"]) for r in rows if r["qtype"] == qtype})
            lines.append(f"| {qtype} | {n} | " + " | ".join(cells) + " |")
        lines += ["", "Score: F1 for free-form answers, 1/0 for multiple choice and for abstaining on unanswerable "
                  "questions, as a percentage.", ""]
    lines += ["## Documents", "", "| document | tokens | questions | absorption s | steps | stopped by budget | "
              "training tokens/s | peak RSS while absorbing MiB | " + " | ".join(summary) + " |",
              "|---|---|---|---|---|---|---|---|" + "---|" * len(summary)]
    for doc_id, info in documents.items():
        mine = [r for r in rows if r["doc_id"] == doc_id]
        if not mine:
            continue
        cells = [_fmt(_mean(100 * r["score"] for r in mine if r["method"] == m)) for m in summary]
        lines.append(
            f"| {doc_id} | {info.get('tokens', 0):,} | {len({r['index'] for r in mine})} | "
            f"{_fmt(info.get('train_seconds'))} | {info.get('steps', '-')} | "
            f"{'yes' if info.get('stopped_by_budget') else 'no' if 'steps' in info else '-'} | "
            f"{_fmt(info.get('tokens_per_second'), 0)} | {_fmt(info.get('absorb_memory', {}).get('peak_rss_mib'), 0)} | "
            + " | ".join(cells) + " |"
        )
    lines += ["", "Per-document cells: the mean score of the method on that document's questions (%)."]
    return "\n".join(lines) + "\n"


def answer_dtype(settings: "Settings") -> str:
    """The number format the model answers in with these settings ("bfloat16", "float32", …)."""
    from lift_tool.models import pick_device, pick_dtype

    return str(pick_dtype(pick_device(settings.device), settings.dtype)).removeprefix("torch.")
