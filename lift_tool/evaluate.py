"""``lift eval``: compare answering methods on a question set over long documents.

    run_evaluation(settings, Path("longdoc_qa_dev.jsonl"), ["base", "context", "rag", "lift", "lift+rag"], Path("out"))

Each document is absorbed once (LIFT trains on the document's text only, never on its questions) and indexed for
retrieval; then every question is asked with every method. Written into the output folder:

  rows.jsonl      one line per finished (document, question, method), appended as it finishes: the resume log
  documents.json  per document: tokens, absorption seconds, steps, peak memory
  results.json    the rows as one list (``doc_id, question, method, prediction, answers, unanswerable, score,
                  latency_s`` and the separate metrics)
  report.md       per method: token F1 / exact match (extractive and free-form answers), accuracy (multiple
                  choice), abstention on unanswerable questions, seconds per question, absorption, peak memory
  plot.png        quality against cost per question, per method
  memory/         the LIFT home of the run (registry, adapters, Chroma): a resumed run reuses its adapters

An interrupted run resumes where it stopped: finished rows are kept and skipped, absorbed documents are cache hits.

Data formats (one JSON object per line):
  longdoc_qa: ``{doc_id, context, questions: [{question, type: "mc"|"extractive", answer | answers,
               unanswerable?}]}``
  LooGLE:     ``{title, input, qa_pairs}``; ``qa_pairs`` is a Python literal of ``[{Q, A, S, type?}]``

Scoring (``lift_tool.metrics``): the score of a row is token F1 for a question with a free-form or extractive
answer, 1/0 for a multiple-choice question (options A-D or 1-4 are in the question; the chosen option is read from
the answer), and 1/0 for an unanswerable question (1 when the answer abstains, ``prompts.is_abstention``).
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from lift_tool import metrics
from lift_tool.errors import ConfigError, InputError
from lift_tool.prompts import is_abstention

if TYPE_CHECKING:
    from lift_tool.config import Settings

EVAL_METHODS = ("base", "context", "rag", "lift", "lift+rag", "auto")
ADAPTER_METHODS = {"lift", "lift+rag", "auto"}
MC_INSTRUCTION = {"letter": "Answer with the letter of the correct option.",
                  "number": "Answer with the number of the correct option."}


# ---------------------------------------------------------------------------------------------------- data


@dataclass
class EvalQuestion:
    index: int  # position among the document's questions: with doc_id and method, the key of a result
    question: str  # as written in the data (multiple-choice options included)
    kind: str  # "extractive" | "mc" | "free"
    answers: list[str]  # gold answers (for "mc": the correct label)
    unanswerable: bool = False
    options: dict[str, str] = field(default_factory=dict)  # "mc": label -> option text
    qtype: str = ""  # the data set's category (LooGLE's long-dependency type, QuALITY, SQuAD, ...)

    @property
    def prompt(self) -> str:
        """What is asked: the question, plus how to answer for multiple choice."""
        if self.kind != "mc":
            return self.question
        style = "number" if next(iter(self.options)).isdigit() else "letter"
        return f"{self.question}\n\n{MC_INSTRUCTION[style]}"


@dataclass
class EvalDocument:
    doc_id: str  # the data set's id (LooGLE: the title)
    text: str
    questions: list[EvalQuestion]
    title: str | None = None
    line: int = 0  # line number in the data file


def load_dataset(path: Path, on_bad_line: str = "stop", warn: Callable[[str], None] | None = None) -> list[EvalDocument]:
    """Read a longdoc_qa or LooGLE JSONL file. A bad line (not JSON, not either format, no questions) raises
    :class:`InputError` naming its line, or with ``on_bad_line="skip"`` is reported to ``warn`` and skipped."""
    if on_bad_line not in ("stop", "skip"):
        raise ConfigError(f"on_bad_line must be 'stop' or 'skip', not {on_bad_line!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"data file not found: {path}" if not path.exists() else f"{path} is not a file")
    warn = warn or (lambda message: print(f"lift eval: warning: {message}", file=sys.stderr))
    documents: list[EvalDocument] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                document = parse_record(line, number)
                if document.doc_id in seen:
                    raise InputError(f"document {document.doc_id!r} appears twice")
            except InputError as err:
                message = f"{path}, line {number}: {err}"
                if on_bad_line == "stop":
                    raise InputError(f"{message} (pass --on-bad-line skip to skip bad lines)") from None
                warn(f"{message}; skipped")
                continue
            seen.add(document.doc_id)
            documents.append(document)
    if not documents:
        raise InputError(f"{path} holds no documents with questions")
    return documents


def parse_record(line: str, number: int = 0) -> EvalDocument:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise InputError("expected a JSON object")
    if "context" in record and "questions" in record:
        document = _longdoc_record(record)
    elif "input" in record and "qa_pairs" in record:
        document = _loogle_record(record)
    else:
        raise InputError("not a known record: expected {doc_id, context, questions} or LooGLE's {title, input, qa_pairs}")
    if not document.text.strip():
        raise InputError(f"document {document.doc_id!r} has no text")
    if not document.questions:
        raise InputError(f"document {document.doc_id!r} has no questions")
    document.line = number
    return document


def _longdoc_record(record: dict) -> EvalDocument:
    doc_id = str(record.get("doc_id") or "").strip()
    if not doc_id:
        raise InputError("the record has no doc_id")
    if not isinstance(record["questions"], list):
        raise InputError(f"document {doc_id!r}: questions must be a list")
    questions = []
    for index, item in enumerate(record["questions"]):
        if not isinstance(item, dict) or not str(item.get("question") or "").strip():
            raise InputError(f"document {doc_id!r}, question {index + 1}: no question text")
        text = item["question"].strip()
        unanswerable = bool(item.get("unanswerable"))
        if item.get("type") == "mc" or (item.get("answer") and metrics.parse_options(text)):
            options = metrics.parse_options(text)
            answer = str(item.get("answer") or "").strip()
            if answer not in options:
                raise InputError(f"document {doc_id!r}, question {index + 1}: multiple choice needs options "
                                 f"(A) ... in the question and an answer among their labels")
            questions.append(EvalQuestion(index, text, "mc", [answer], options=options, qtype=item.get("type", "mc")))
            continue
        answers = item.get("answers", item.get("answer"))
        answers = [answers] if isinstance(answers, str) else list(answers or [])
        answers = [str(a) for a in answers if str(a).strip()]
        if not answers and not unanswerable:
            raise InputError(f"document {doc_id!r}, question {index + 1}: no answers (and not marked unanswerable)")
        questions.append(EvalQuestion(index, text, "extractive", answers, unanswerable, qtype=item.get("type", "extractive")))
    return EvalDocument(doc_id, record["context"], questions, title=record.get("title"))


def _loogle_record(record: dict) -> EvalDocument:
    title = str(record.get("title") or "").strip()
    if not title:
        raise InputError("the LooGLE record has no title")
    pairs = record["qa_pairs"]
    if isinstance(pairs, str):
        try:
            pairs = ast.literal_eval(pairs) if pairs.strip().lower() != "none" else []
        except (ValueError, SyntaxError) as err:
            raise InputError(f"document {title!r}: qa_pairs is not a Python literal ({err})") from None
    if not isinstance(pairs, list):
        raise InputError(f"document {title!r}: qa_pairs must be a list")
    questions = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, dict) or not str(pair.get("Q") or "").strip() or not str(pair.get("A") or "").strip():
            raise InputError(f"document {title!r}, question {index + 1}: needs Q and A")
        text, answer = pair["Q"].strip(), str(pair["A"]).strip()
        qtype = pair.get("type") or "short_dependency"
        options = metrics.parse_options(text)
        if options and answer.rstrip(".") in options:  # long-dependency questions with numbered options
            questions.append(EvalQuestion(index, text, "mc", [answer.rstrip(".")], options=options, qtype=qtype))
        else:
            questions.append(EvalQuestion(index, text, "free", [answer], qtype=qtype))
    return EvalDocument(title, record["input"], questions, title=title)


# ------------------------------------------------------------------------------------------------ scoring


def score_answer(question: EvalQuestion, prediction: str) -> dict:
    """The row's metrics: ``score`` (the headline), and f1 / em / contains / correct / abstained as they apply."""
    abstained = is_abstention(prediction)
    result: dict = {"abstained": abstained, "f1": None, "em": None, "contains": None, "correct": None}
    if question.unanswerable:
        result["score"] = float(abstained)
    elif question.kind == "mc":
        result["correct"] = metrics.mc_correct(prediction, question.options, question.answers[0])
        result["score"] = result["correct"]
    else:
        result["f1"] = metrics.best(metrics.token_f1, prediction, question.answers)
        result["em"] = metrics.best(metrics.exact_match, prediction, question.answers)
        result["contains"] = metrics.best(metrics.contains, prediction, question.answers)
        result["score"] = result["f1"]
    return result


# ------------------------------------------------------------------------------------------------ memory


class MemoryMeter:
    """Peak resident memory (and CUDA memory) over a block, sampled by a background thread every 20 ms."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._peak = self._start = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def start(self) -> None:
        """Begin a measurement. Memory freed earlier (an absorption's) is first handed back to the system, so the
        peak reflects what the block itself holds rather than the allocator's leftovers."""
        _return_freed_memory()
        self._start = self._peak = self._process.memory_info().rss
        if _cuda():
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict:
        """Peak RSS (MiB) since :meth:`start`, and the CUDA peak where a GPU is used."""
        self._peak = max(self._peak, self._process.memory_info().rss)
        result = {"peak_rss_mib": round(self._peak / 2**20, 1), "added_rss_mib": round((self._peak - self._start) / 2**20, 1)}
        if _cuda():
            import torch

            result["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return result

    def close(self) -> None:
        self._stop.set()


def _return_freed_memory() -> None:
    """glibc's malloc_trim: give freed heap memory back to the operating system (a no-op elsewhere)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _cuda() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class EvalResult:
    out_dir: Path
    rows: list[dict]
    documents: dict[str, dict]
    summary: dict[str, dict]  # method -> aggregated metrics (see summarise)


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
) -> EvalResult:
    """Answer every question of every document with every method; write rows, results, report and plot.

    ``budget_seconds`` caps each absorption (default: the settings' training budget); ``select`` keeps only the
    documents whose id matches a shell pattern (``"squad2dev_*"``). The run's memory lives
    in ``out_dir/memory``, so a rerun with the same ``out_dir`` resumes: finished rows are skipped and absorbed
    documents are reused.
    """
    methods = _check_methods(methods)
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
    settings = settings.model_copy(update={"home": out_dir / "memory"})

    from tqdm.auto import tqdm

    from lift_tool.lift import Lift

    log = RowLog(out_dir / "rows.jsonl")
    doc_info = _read_json(out_dir / "documents.json", {})
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
            _write_json(out_dir / "documents.json", doc_info)
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


def _check_methods(methods: list[str]) -> list[str]:
    methods = [m.strip() for m in methods if m.strip()]
    unknown = [m for m in methods if m not in EVAL_METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown method(s) {', '.join(unknown) or '(none given)'}: use {', '.join(EVAL_METHODS)}")
    return list(dict.fromkeys(methods))


def answer_dtype(settings: "Settings") -> str:
    """The number format the model answers in with these settings ("bfloat16", "float32", …)."""
    from lift_tool.models import pick_device, pick_dtype

    return str(pick_dtype(pick_device(settings.device), settings.dtype)).removeprefix("torch.")


def _check_same_run(out_dir: Path, data_path: Path, settings: "Settings") -> None:
    """Refuse to mix the results of another data file or another model into an output folder."""
    data_digest = hashlib.sha256(Path(data_path).read_bytes()).hexdigest()
    run = {"data": str(data_path), "data_sha256": data_digest, "model": settings.model, "dtype": answer_dtype(settings),
           "context_window": settings.context_window, "max_new_tokens": settings.max_new_tokens,
           "training": settings.training_fingerprint(),
           "adapter_min_probability": settings.retrieval.adapter_min_probability,
           "retrieval": f"{settings.retrieval.search}, k={settings.retrieval.k}"}
    names = {"data_sha256": "data file", "model": "model", "dtype": "number format (dtype)",
             "context_window": "context window", "max_new_tokens": "answer length",
             "training": "training recipe (settings fingerprint)",
             "adapter_min_probability": "lift+rag adapter trust (retrieval.adapter_min_probability)",
             "retrieval": "retrieval (search method and k)"}
    previous = _read_json(out_dir / "run.json", None)
    if previous is not None:
        for key, name in names.items():
            if previous.get(key) != run[key]:
                raise InputError(
                    f"{out_dir} holds an evaluation with another {name} ({previous.get(key)!r}, now {run[key]!r}): "
                    "choose another --out to start a new one"
                )
    _write_json(out_dir / "run.json", run)


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
            "train_seconds": manifest["train_seconds"],
            "steps": manifest["steps"],
            "planned_steps": manifest.get("planned_steps"),
            "stopped_by_budget": manifest.get("stopped_by_budget", False),
            "tokens_per_second": manifest.get("tokens_per_second"),
            "settings_fingerprint": manifest.get("settings_fingerprint"),
        }
        if not result.cached:
            info["absorb_wall_seconds"] = round(time.monotonic() - started, 2)
            info["absorb_memory"] = meter.peak()
        return info
    entry = lift.index(document.text, title=document.title)
    return {"lift_doc_id": entry.doc_id, "title": entry.title, "tokens": entry.tokens, "cached": False,
            "index_seconds": round(time.monotonic() - started, 2)}


class RowLog:
    """Finished rows, one JSON line each, appended and flushed as they finish. A torn last line (the process
    killed mid-write) is ignored; a key written twice keeps its last row."""

    def __init__(self, path: Path):
        self.path = path
        self._rows: dict[tuple, dict] = {}
        if path.is_file():
            # Bytes, split on b"\n" only: a torn line may end mid-character, and text may hold other line breaks.
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # cut the torn line off, so the next row starts a line of its own
                data = data[: data.rfind(b"\n") + 1]
                with open(path, "r+b") as handle:
                    handle.truncate(len(data))
            for line in data.split(b"\n"):
                try:
                    row = json.loads(line)
                    self._rows[(row["doc_id"], row["index"], row["method"])] = row
                except (ValueError, KeyError, TypeError):  # ValueError covers bad JSON and bad UTF-8
                    continue

    @property
    def keys(self) -> set[tuple]:
        return set(self._rows)

    def append(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8", newline="\n") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._rows[(row["doc_id"], row["index"], row["method"])] = row

    def rows(self) -> list[dict]:
        return list(self._rows.values())


# ------------------------------------------------------------------------------------------------ outputs


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
            "distinct": _mean([100 * len({metrics.normalize_answer(r["prediction"]) for r in free}) / len(free)])
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
    _write_json(out_dir / "results.json", rows)
    summary = summarise(rows, documents) if rows else {}
    (out_dir / "report.md").write_text(render_report(rows, documents, summary, settings, data_path, label), encoding="utf-8")
    if summary:
        try:
            plot(summary, out_dir / "plot.png", title=label or Path(data_path).name)
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


def plot(summary: dict[str, dict], path: Path, title: str = "") -> None:
    """Quality against cost per question, one point per method; one panel per kind of quality measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    panels = [(key, name) for key, name in (("f1", "token F1 (answerable, %)"), ("accuracy", "MC accuracy (%)"),
                                           ("abstention", "abstention on unanswerable (%)"))
              if any(s[key] is not None for s in summary.values())]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for axis, (key, name) in zip(axes[0], panels):
        for method, s in summary.items():
            if s[key] is None:
                continue
            axis.scatter(s["cost_s"], s[key], s=50)
            axis.annotate(method, (s["cost_s"], s[key]), textcoords="offset points", xytext=(6, 4))
        axis.set_xlabel("seconds per question (absorption amortised)")
        axis.set_ylabel(name)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        top = max(s[key] for s in summary.values() if s[key] is not None)
        axis.set_ylim(0, max(5.0, top * 1.15))
        axis.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------------------------------------ files


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def _write_json(path: Path, value) -> None:
    """Atomically: a reader (or a crash) never sees half a file."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(value, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(staging, path)


__all__ = ["run_evaluation", "load_dataset", "score_answer", "summarise", "EvalDocument", "EvalQuestion", "EvalResult"]
