"""The question sets of ``lift eval``: documents with their questions, read from JSONL.

Two formats (one JSON object per line):
  longdoc_qa: ``{doc_id, context, questions: [{question, type: "mc"|"extractive", answer | answers,
               unanswerable?}]}``
  LooGLE:     ``{title, input, qa_pairs}``; ``qa_pairs`` is a Python literal of ``[{Q, A, S, type?}]``

A multiple-choice question carries its options (A-D or 1-4) in its text; its answer is the correct label.
"""

from __future__ import annotations

import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lift_tool.errors import ConfigError, InputError
from lift_tool.eval.scoring import parse_options

MC_INSTRUCTION = {"letter": "Answer with the letter of the correct option.",
                  "number": "Answer with the number of the correct option."}


@dataclass
class EvalQuestion:
    """One question of an evaluation document, with its gold answers and how it is scored."""

    index: int  # position among the document's questions: with doc_id and method, the key of a result
    question: str  # as written in the data (multiple-choice options included)
    kind: str  # "extractive" | "mc" | "free"
    answers: list[str]  # gold answers (for "mc": the correct label)
    unanswerable: bool = False
    options: dict[str, str] = field(default_factory=dict)  # "mc": label -> option text
    qtype: str = ""  # the data set's category (LooGLE's long-dependency type, QuALITY, SQuAD, ...)
    evidence: list[str] = field(default_factory=list)  # the passages of the document that answer it (LooGLE's S)

    @property
    def prompt(self) -> str:
        """What is asked: the question, plus how to answer for multiple choice."""
        if self.kind != "mc":
            return self.question
        style = "number" if next(iter(self.options)).isdigit() else "letter"
        return f"{self.question}\n\n{MC_INSTRUCTION[style]}"


@dataclass
class EvalDocument:
    """One document of an evaluation set and its questions."""

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
        if item.get("type") == "mc" or (item.get("answer") and parse_options(text)):
            options = parse_options(text)
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
        evidence = pair.get("S") or []
        evidence = [str(piece) for piece in (evidence if isinstance(evidence, list) else [evidence]) if str(piece).strip()]
        options = parse_options(text)
        if options and answer.rstrip(".") in options:  # long-dependency questions with numbered options
            questions.append(EvalQuestion(index, text, "mc", [answer.rstrip(".")], options=options, qtype=qtype,
                                          evidence=evidence))
        else:
            questions.append(EvalQuestion(index, text, "free", [answer], qtype=qtype, evidence=evidence))
    return EvalDocument(title, record["input"], questions, title=title)
