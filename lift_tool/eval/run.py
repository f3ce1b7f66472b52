"""The run of ``lift eval``: absorb (or index) each document once, ask every question with every method.

LIFT trains on the document's text only, never on its questions. Each finished (document, question, method)
is appended to the resume log as it finishes, so an interrupted run resumes where it stopped: finished rows are
kept and skipped, and absorbed documents are cache hits of the run's own memory (``out_dir/memory``).
"""

from __future__ import annotations

import fnmatch
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lift_tool.errors import ConfigError, InputError
from lift_tool.eval.data import EvalDocument, load_dataset
from lift_tool.eval.meter import MemoryMeter
from lift_tool.eval.methods import ADAPTER_METHODS, check_methods
from lift_tool.eval.report import EvalResult, answer_dtype, write_outputs
from lift_tool.eval.rows import RowLog
from lift_tool.eval.scoring import score_answer
from lift_tool.files import read_json, sha256_file, write_json

if TYPE_CHECKING:
    from lift_tool.config import Settings


def run_evaluation(
    settings: "Settings",
    data_path: Path,
    methods: list[str],
    out_dir: Path,
    limit_docs: int | None = None,
    limit_questions: int | None = None,
    on_bad_line: str = "stop",
    progress: bool = True,
    budget_seconds: float | None = None,
    max_new_tokens: int | None = None,
    label: str | None = None,
    select: str | None = None,
    memory: Path | None = None,
) -> EvalResult:
    """Answer every question of every document with every method; write rows, results, report and plot.

    ``budget_seconds`` caps each absorption (default: the settings' training budget); ``select`` keeps only the
    documents whose id matches a shell pattern (``"squad2dev_*"``). The run's memory lives
    in ``memory`` (default ``out_dir/memory``), so a rerun with the same ``out_dir`` resumes: finished rows are
    skipped and absorbed documents are reused; an evaluation given another evaluation's memory reuses the
    adapters of the documents the two share (absorbed with the same recipe).
    """
    methods = check_methods(methods)
    for name, value in (("limit_docs", limit_docs), ("limit_questions", limit_questions)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1")
    documents = load_dataset(data_path, on_bad_line)
    if select:
        documents = [d for d in documents if fnmatch.fnmatchcase(d.doc_id, select)]
        if not documents:
            raise InputError(f"no document of {data_path} has an id matching {select!r}")
    documents = documents[:limit_docs]
    if max_new_tokens is not None:
        settings = settings.model_copy(update={"max_new_tokens": max_new_tokens})
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_run(out_dir, data_path, settings)
    settings = settings.model_copy(update={"home": Path(memory).expanduser() if memory else out_dir / "memory"})

    from tqdm.auto import tqdm

    from lift_tool.lift import Lift

    log = RowLog(out_dir / "rows.jsonl")
    doc_info = read_json(out_dir / "documents.json", {})
    lift = Lift(settings)
    meter = MemoryMeter()
    say = (lambda text: tqdm.write(text, file=sys.stderr)) if progress else (lambda text: None)
    try:
        for number, document in enumerate(documents, 1):
            questions = document.questions[:limit_questions]
            done = log.keys
            # Method by method over the document's questions, as a session asks them: what a method keeps between
            # questions (the in-context prompt's key/value prefix) works as it does in use.
            todo = [(q, m) for m in methods for q in questions if (document.doc_id, q.index, m) not in done]
            if not todo:
                say(f"[{number}/{len(documents)}] {document.doc_id}: done before")
                continue
            absorb = any(method in ADAPTER_METHODS for method in methods)
            say(f"[{number}/{len(documents)}] {document.doc_id}: {'absorbing' if absorb else 'indexing'}")
            info = _prepare(lift, document, absorb, budget_seconds, meter, progress)
            doc_info[document.doc_id] = {**doc_info.get(document.doc_id, {}), **info}
            write_json(out_dir / "documents.json", doc_info)
            say(f"    {info['tokens']:,} tokens" + (
                f", absorbed in {info['train_seconds']:.0f} s ({info['steps']} steps"
                f"{', stopped by the budget' if info['stopped_by_budget'] else ''})"
                f"{' (reused)' if info['cached'] else ''}" if absorb else ""))
            bar = tqdm(todo, desc=f"[{number}/{len(documents)}] {document.doc_id[:30]}", unit="answer",
                       disable=not progress, leave=False)
            for question, method in bar:
                bar.set_postfix(method=method, q=question.index + 1)
                meter.start()
                answer = lift.ask(question.prompt, [info["lift_doc_id"]], mode=method)
                row = {
                    "doc_id": document.doc_id,
                    "index": question.index,
                    "question": question.question,
                    "kind": question.kind,
                    "qtype": question.qtype,
                    "method": method,
                    "mode_used": answer.mode,
                    "prediction": answer.text,
                    "answers": question.answers,
                    "unanswerable": question.unanswerable,
                    **score_answer(question, answer.text),
                    "latency_s": round(answer.seconds, 3),
                    **meter.peak(),
                }
                log.append(row)
            bar.close()
    finally:
        meter.close()
        result = write_outputs(out_dir, log.rows(), doc_info, settings, data_path, label)
    return result


def run_identity(data_path: Path, settings: "Settings") -> dict:
    """What an evaluation's rows depend on (``run.json``): a resumed run must match it in every key but ``data``,
    the data file's path, which may differ from machine to machine."""
    return {"data": str(data_path), "data_sha256": sha256_file(data_path), "model": settings.model,
            "dtype": answer_dtype(settings), "context_window": settings.context_window,
            "max_new_tokens": settings.max_new_tokens, "training": settings.training_fingerprint(),
            "adapter_min_probability": settings.retrieval.adapter_min_probability,
            "retrieval": f"{settings.retrieval.search}, k={settings.retrieval.k}"}


def _check_same_run(out_dir: Path, data_path: Path, settings: "Settings") -> None:
    """Refuse to mix the results of another data file or another model into an output folder."""
    run = run_identity(data_path, settings)
    names = {"data_sha256": "data file", "model": "model", "dtype": "number format (dtype)",
             "context_window": "context window", "max_new_tokens": "answer length",
             "training": "training recipe (settings fingerprint)",
             "adapter_min_probability": "lift+rag adapter trust (retrieval.adapter_min_probability)",
             "retrieval": "retrieval (search method and k)"}
    previous = read_json(out_dir / "run.json")
    if previous is not None:
        for key, name in names.items():
            if previous.get(key) != run[key]:
                raise InputError(
                    f"{out_dir} holds an evaluation with another {name} ({previous.get(key)!r}, now {run[key]!r}): "
                    "choose another --out to start a new one"
                )
    write_json(out_dir / "run.json", run)


def _prepare(lift, document: EvalDocument, absorb: bool, budget_seconds: float | None, meter: MemoryMeter,
             progress: bool) -> dict:
    """Absorb (or only index) a document; what the report needs about it."""
    started = time.monotonic()
    meter.start()
    if absorb:
        result = lift.absorb(document.text, title=document.title, budget_seconds=budget_seconds, progress=progress)
        manifest = result.adapter.manifest
        info = {
            "lift_doc_id": result.document.doc_id,
            "title": result.document.title,
            "tokens": result.document.tokens,
            "cached": result.cached,
            "train_seconds": manifest.train_seconds,
            "steps": manifest.steps,
            "planned_steps": manifest.planned_steps,
            "stopped_by_budget": manifest.stopped_by_budget,
            "tokens_per_second": manifest.tokens_per_second,
            "settings_fingerprint": manifest.settings_fingerprint,
        }
        if not result.cached:
            info["absorb_wall_seconds"] = round(time.monotonic() - started, 2)
            info["absorb_memory"] = meter.peak()
        return info
    entry = lift.index(document.text, title=document.title)
    return {"lift_doc_id": entry.doc_id, "title": entry.title, "tokens": entry.tokens, "cached": False,
            "index_seconds": round(time.monotonic() - started, 2)}
