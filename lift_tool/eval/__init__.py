"""``lift eval``: compare answering methods on a question set over long documents.

    run_evaluation(settings, Path("longdoc_qa_dev.jsonl"), ["base", "context", "rag", "lift", "lift+rag"], Path("out"))

Each document is absorbed once and indexed for retrieval; then every question is asked with every method.
Written into the output folder:

  rows.jsonl      one line per finished (document, question, method), appended as it finishes: the resume log
  documents.json  per document: tokens, absorption seconds, steps, peak memory
  run.json        what the rows depend on (data file, model, number format, recipe, retrieval): a resumed run
                  must match it; rows.jsonl, documents.json and run.json copied to another machine resume there
  results.json    the rows as one list (``doc_id, question, method, prediction, answers, unanswerable, score,
                  latency_s`` and the separate metrics)
  report.md       per method: token F1 / exact match (extractive and free-form answers), accuracy (multiple
                  choice), abstention on unanswerable questions, seconds per question, absorption, peak memory
  plot.png        quality against cost per question, per method (where 10+ questions measure it)
  memory/         the LIFT home of the run (registry, adapters, Chroma): a resumed run reuses its adapters

The parts: ``data`` (the question sets), ``scoring`` (a row's metrics), ``meter`` (peak memory), ``methods``,
``rows`` (the resume log), ``run`` (the loop), ``report`` and ``plot`` (the outputs).
"""

from lift_tool.eval.data import EvalDocument, EvalQuestion, load_dataset, parse_record
from lift_tool.eval.meter import MemoryMeter
from lift_tool.eval.methods import ADAPTER_METHODS, EVAL_METHODS
from lift_tool.eval.report import EvalResult, answer_dtype, render_report, summarise, write_outputs
from lift_tool.eval.rows import RowLog
from lift_tool.eval.run import run_evaluation, run_identity
from lift_tool.eval.scoring import score_answer

__all__ = [
    "ADAPTER_METHODS",
    "EVAL_METHODS",
    "EvalDocument",
    "EvalQuestion",
    "EvalResult",
    "MemoryMeter",
    "RowLog",
    "answer_dtype",
    "load_dataset",
    "parse_record",
    "render_report",
    "run_evaluation",
    "run_identity",
    "score_answer",
    "summarise",
    "write_outputs",
]
