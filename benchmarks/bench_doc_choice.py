"""Which document is a question about? Measures RetrievalStore.choose_documents and picks its threshold.

Indexes real documents in a throwaway Chroma store, then asks
  - every question written for those documents: does the top-scored document equal the question's own?
  - general-knowledge questions about none of them (OFF_TOPIC_QUESTIONS in tests/test_retrieval.py):
    how high do they score?
and writes the score distributions, a threshold sweep and the chosen threshold to
benchmarks/results/doc_choice/doc_choice.md.

Data (read in place, never copied into the repository):
  ../shared/data/longdoc_qa_dev.jsonl       6 documents of 2-2.5k words, 767 questions (the main set)
  ../shared/data/loogle/*.jsonl             9 documents of 8.5k-20k words, 123 questions (longer documents:
                                            more chunks, so more chances for an unrelated question to find a
                                            similar-looking chunk; skip with --no-loogle)

    python benchmarks/bench_doc_choice.py [--data ../shared/data] [--no-loogle] [--out DIR]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import DATA, REPO, header, machine, results_dir, started_at

from lift_tool.memory.retrieval import DEFAULT_DOC_MARGIN, DEFAULT_DOC_THRESHOLD, RetrievalStore  # noqa: E402

SWEEP = [round(0.20 + 0.025 * i, 3) for i in range(13)]  # 0.20 .. 0.50


def off_topic_questions() -> list[str]:
    spec = importlib.util.spec_from_file_location("_test_retrieval", REPO / "tests" / "test_retrieval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.OFF_TOPIC_QUESTIONS)


def stem(question: str) -> str:
    """The question without its multiple-choice options (QuALITY: after a blank line, LooGLE: numbered lines)."""
    return question.split("\n")[0].strip()


def load_dev(data: Path) -> tuple[dict, list]:
    docs, questions = {}, []
    for line in (data / "longdoc_qa_dev.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["doc_id"].startswith("squad2dev_"):
            title = rec["doc_id"].removeprefix("squad2dev_").replace("_", " ")
        else:
            title = rec["context"].split("\n")[0]  # QuALITY articles start with their title
        docs[rec["doc_id"]] = (title, rec["context"])
        for q in rec["questions"]:
            kind = "squad-unanswerable" if q.get("unanswerable") else ("quality" if q["type"] == "mc" else "squad")
            questions.append((rec["doc_id"], stem(q["question"]), kind))
    return docs, questions


def load_loogle(data: Path) -> tuple[dict, list]:
    docs, questions = {}, []
    for name in ("shortdep_qa.jsonl", "longdep_qa.jsonl"):
        for line in (data / "loogle" / name).read_text().splitlines():
            rec = json.loads(line)
            doc_id = "loogle_" + rec["title"].replace(" ", "_")
            docs[doc_id] = (rec["title"], rec["input"])
            for qa in ast.literal_eval(rec["qa_pairs"]):
                questions.append((doc_id, stem(qa["Q"]), name.split("_")[0]))
    return docs, questions


def all_scores(store: RetrievalStore, question: str, n_docs: int) -> list:
    """Every document's score for the question, best first (no threshold, no margin)."""
    return store.choose_documents(question, threshold=-1.0, max_docs=n_docs, margin=2.0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(name: str, docs: dict, questions: list, off_topic: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = RetrievalStore(Path(tmp) / "chroma")
        t0 = time.perf_counter()
        n_chunks = sum(store.add_document(doc_id, title, text) for doc_id, (title, text) in docs.items())
        index_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows = []  # (kind, top-1 right, top score, [(doc_id, score) best first], own doc_id)
        for doc_id, question, kind in questions:
            ranked = [(m.doc_id, m.score) for m in all_scores(store, question, len(docs))]
            rows.append((kind, ranked[0][0] == doc_id, ranked[0][1], ranked, doc_id))
        per_question_ms = 1000 * (time.perf_counter() - t0) / len(questions)
        off = [(q, all_scores(store, q, len(docs))[0]) for q in off_topic]
    return {
        "name": name,
        "docs": len(docs),
        "chunks": n_chunks,
        "index_s": index_s,
        "per_question_ms": per_question_ms,
        "rows": rows,
        "off": [(q, m.doc_id, m.score) for q, m in off],
    }


def returned(ranked: list, threshold: float, margin: float, max_docs: int = 3) -> list[str]:
    """What choose_documents returns, recomputed from every document's score."""
    top = ranked[0][1]
    return [d for d, s in ranked if s >= threshold and s >= top - margin][:max_docs]


def report(results: list[dict], started: str, description: str, total_s: float) -> str:
    out = [
        *header("Choosing the document a question is about", started, description, total_s / 60),
        "`RetrievalStore.choose_documents` scores each stored document by the cosine similarity of its best "
        "chunk to the question (all-MiniLM-L6-v2, chunks of 200 word pieces with 50 overlap), keeps those at "
        "or above the threshold and within the margin of the best, best first. Multiple-choice questions are "
        "asked without their options. Off-topic questions: `OFF_TOPIC_QUESTIONS` in `tests/test_retrieval.py`.",
        "",
        f"Shipped defaults: threshold **{DEFAULT_DOC_THRESHOLD}**, margin **{DEFAULT_DOC_MARGIN}**.",
        "",
    ]
    main_off = [s for _, _, s in results[0]["off"]]
    lowest_clean = min(t for t in SWEEP if all(s < t for s in main_off))
    out += [
        f"On the main set the lowest threshold of the sweep that gives no off-topic question a document is "
        f"{lowest_clean}. Below it, general questions start to land on whichever document has a similar-looking "
        "chunk; above it, more questions about a stored document are answered \"none\" (mostly SQuAD questions "
        "that do not name their subject, such as \"What leads to confusion and collapse?\").",
        "",
    ]
    for r in results:
        rows, off = r["rows"], r["off"]
        top = [row[2] for row in rows]
        own_ok = [row[2] for row in rows if row[1]]
        off_scores = [s for _, _, s in off]
        out += [
            f"## {r['name']}: {r['docs']} documents, {r['chunks']} chunks, {len(rows)} questions",
            "",
            f"Indexing {r['index_s']:.1f} s; one choice {r['per_question_ms']:.0f} ms (embed the question + one query).",
            "",
            "| questions | n | top-1 accuracy |",
            "|---|---|---|",
        ]
        for kind in sorted({row[0] for row in rows}):
            sel = [row for row in rows if row[0] == kind]
            out.append(f"| {kind} | {len(sel)} | {sum(row[1] for row in sel) / len(sel):.1%} |")
        out.append(f"| all | {len(rows)} | {sum(row[1] for row in rows) / len(rows):.1%} |")
        out += [
            "",
            "Best-document score (cosine similarity of the best chunk):",
            "",
            "| | min | 1% | 5% | 10% | median | max |",
            "|---|---|---|---|---|---|---|",
            f"| own-document questions (top-1 right) | {min(own_ok):.3f} | {pct(own_ok, .01):.3f} | {pct(own_ok, .05):.3f} | "
            f"{pct(own_ok, .10):.3f} | {statistics.median(own_ok):.3f} | {max(own_ok):.3f} |",
            f"| off-topic questions ({len(off)}) | {min(off_scores):.3f} | | | | {statistics.median(off_scores):.3f} | "
            f"{max(off_scores):.3f} |",
            "",
            "Highest off-topic scores: "
            + "; ".join(f"{s:.3f} \"{q}\" → {d}" for q, d, s in sorted(off, key=lambda x: -x[2])[:3]),
            "",
            "Threshold sweep. *kept*: own-document questions whose top document is right and scores at or above "
            "the threshold; *lost*: own-document questions answered \"none\"; *off-topic accepted*: off-topic "
            "questions given some document.",
            "",
            "| threshold | kept | lost | off-topic accepted |",
            "|---|---|---|---|",
        ]
        for t in SWEEP:
            kept = sum(1 for row in rows if row[1] and row[2] >= t) / len(rows)
            lost = sum(1 for s in top if s < t) / len(rows)
            accepted = sum(1 for s in off_scores if s >= t)
            mark = " ← default" if abs(t - DEFAULT_DOC_THRESHOLD) < 1e-9 else ""
            out.append(f"| {t:.3f}{mark} | {kept:.1%} | {lost:.1%} | {accepted}/{len(off)} |")
        out += [
            "",
            f"Margin sweep at the threshold {DEFAULT_DOC_THRESHOLD} (at most 3 documents): a second document is "
            "returned when it scores within the margin of the best.",
            "",
            "| margin | right document returned | none | one | more than one | mean documents |",
            "|---|---|---|---|---|---|",
        ]
        for m in (0.0, 0.05, 0.10, 0.15):
            sets = [returned(row[3], DEFAULT_DOC_THRESHOLD, m) for row in rows]
            right = sum(1 for s, row in zip(sets, rows) if row[4] in s) / len(rows)
            sizes = [len(s) for s in sets]
            mark = " ← default" if abs(m - DEFAULT_DOC_MARGIN) < 1e-9 else ""
            out.append(
                f"| {m:.2f}{mark} | {right:.1%} | {sizes.count(0) / len(sizes):.1%} | {sizes.count(1) / len(sizes):.1%} | "
                f"{sum(1 for n in sizes if n > 1) / len(sizes):.1%} | {statistics.mean(sizes):.2f} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--no-loogle", action="store_true", help="only the 6 short documents")
    parser.add_argument("--out", type=Path, default=results_dir("doc_choice"))
    args = parser.parse_args()
    off = off_topic_questions()
    started, description = started_at(), machine()
    t0 = time.perf_counter()
    results = [measure("longdoc_qa_dev", *load_dev(args.data), off)]
    if not args.no_loogle:
        results.append(measure("LooGLE sample", *load_loogle(args.data), off))
    text = report(results, started, description, time.perf_counter() - t0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "doc_choice.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
