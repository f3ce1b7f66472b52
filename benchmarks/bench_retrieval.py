"""Does retrieval find the passage that answers the question? Dense, keyword (BM25) and hybrid search compared.

Indexes real documents in a throwaway Chroma store (the store's own chunking: 200 word pieces, overlap 50) and
asks every question as the evaluation does (``lift eval``: multiple-choice options included). A question is
found at k when the k chunks returned hold what answers it:
  - SQuAD dev articles (the set the method is chosen on): one of the gold answers, as written (after SQuAD
    normalisation), is in the chunks;
  - LooGLE (a check on long documents, 11k-27k tokens): the share of the question's evidence sentences (its
    ``S`` field) that one chunk holds, word for word up to 80% of the sentence's words (the annotators
    retyped some sentences).
Writes benchmarks/results/retrieval/retrieval.md and retrieval.json.

Data (read in place, never copied into the repository): ../shared/data/longdoc_qa_dev.jsonl (3 SQuAD
articles), ../shared/data/loogle/{shortdep,longdep}_qa.jsonl (5 articles each).

    python benchmarks/bench_retrieval.py [--data ../shared/data] [--out DIR]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import DATA, header, machine, results_dir, started_at, write_json

from lift_tool.eval import load_dataset  # noqa: E402
from lift_tool.eval.scoring import normalize_answer  # noqa: E402
from lift_tool.memory.retrieval import SEARCH_METHODS, RetrievalStore  # noqa: E402

KS = (1, 4, 8)  # 4 is what the prompt gets by default (RetrievalSettings.k)
WORD = re.compile(r"\w+")


def words(text: str) -> Counter:
    return Counter(WORD.findall(text.lower()))


def holds(sentence: str, chunks: list[str]) -> bool:
    """One chunk has at least 80% of the sentence's words (with their counts)."""
    wanted = words(sentence)
    return any(sum((wanted & words(chunk)).values()) >= 0.8 * sum(wanted.values()) for chunk in chunks)


def evidence_sentences(evidence) -> list[str]:
    """LooGLE's S: a string of one or more sentences (short-dependency) or a list of them (long-dependency)."""
    parts = evidence if isinstance(evidence, list) else re.split(r"(?<=[.!?])\s+", evidence)
    return [part for part in parts if len(WORD.findall(part)) >= 4]


def load_sets(data: Path) -> list[dict]:
    """[{name, documents: [(doc_id, text, [(question, check)])]}]; check(chunks) -> share of the answer found."""
    squad = []
    for document in load_dataset(data / "longdoc_qa_dev.jsonl"):
        if not document.doc_id.startswith("squad2dev_"):
            continue  # the QuALITY stories' questions are multiple choice, with no answer text to look for
        questions = []
        for q in document.questions:
            if q.unanswerable:
                continue
            gold = [normalize_answer(a) for a in q.answers if normalize_answer(a)]
            questions.append((q.prompt, lambda chunks, gold=gold: float(
                any(a in normalize_answer(" ".join(chunks)) for a in gold))))
        squad.append((document.doc_id, document.text, questions))
    sets = [{"name": "SQuAD dev articles (answer string)", "documents": squad}]
    for name, file in (("LooGLE short-dependency (evidence)", "shortdep_qa.jsonl"),
                       ("LooGLE long-dependency (evidence)", "longdep_qa.jsonl")):
        documents = []
        raw = [json.loads(line) for line in (data / "loogle" / file).read_text().splitlines() if line.strip()]
        for document, record in zip(load_dataset(data / "loogle" / file), raw):
            pairs = ast.literal_eval(record["qa_pairs"])
            questions = []
            for q in document.questions:
                sentences = evidence_sentences(pairs[q.index].get("S") or [])
                if sentences:
                    questions.append((q.prompt, lambda chunks, s=sentences: sum(holds(x, chunks) for x in s) / len(s)))
            documents.append((document.doc_id, document.text, questions))
        sets.append({"name": name, "documents": documents})
    return sets


def measure(store: RetrievalStore, documents: list) -> dict:
    found = {method: {k: [] for k in KS} for method in SEARCH_METHODS}
    seconds = {method: [] for method in SEARCH_METHODS}
    for doc_id, text, questions in documents:
        store.add_document(doc_id, doc_id, text)
        for question, check in questions:
            for method in SEARCH_METHODS:
                started = time.perf_counter()
                chunks = [c.text for c in store.search(question, k=max(KS), doc_ids=[doc_id], method=method)]
                seconds[method].append(time.perf_counter() - started)
                for k in KS:
                    found[method][k].append(check(chunks[:k]))
    return {method: {"n": len(seconds[method]),
                     **{f"found@{k}": round(100 * statistics.mean(found[method][k]), 1) for k in KS},
                     "median_ms": round(1000 * statistics.median(seconds[method]), 1)}
            for method in SEARCH_METHODS}


def report(results: list[dict], started: str, description: str, total_s: float) -> str:
    lines = [
        *header("Retrieval: does search find the passage that answers?", started, description, total_s / 60),
        "Chunks of 200 word pieces overlapping by 50, as the store makes them; questions "
        "as `lift eval` asks them. Found at k: the share of questions whose answer the k returned chunks hold "
        "(SQuAD: a gold answer string; LooGLE: the evidence sentences, averaged per question). k = 4 is what "
        "the prompt gets by default. Search time: the median of one search (k = 8) within one document, "
        "embedding the question included.", "",
        "| set | method | questions | found@1 | found@4 | found@8 | search ms (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for method, row in result["methods"].items():
            lines.append(f"| {result['name']} | {method} | {row['n']} | {row['found@1']} | {row['found@4']} | "
                         f"{row['found@8']} | {row['median_ms']} |")
    squad = results[0]["methods"]
    chosen = max(squad, key=lambda method: squad[method]["found@4"])
    lines += [
        "", "## The default", "",
        f"The store's default search (`retrieval.search`) is the method that finds the most SQuAD answers in the "
        f"4 chunks the prompt gets: {chosen} ({squad[chosen]['found@4']}%; "
        + ", ".join(f"{m} {row['found@4']}%" for m, row in squad.items() if m != chosen) + "). "
        "The LooGLE sets were not used to choose; on them, at k = 4: "
        + "; ".join(f"{r['name'].split(' (')[0]}: " + ", ".join(f"{m} {row['found@4']}%" for m, row in r['methods'].items())
                    for r in results[1:]) + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=results_dir("retrieval"))
    args = parser.parse_args()
    when, description = started_at(), machine()
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        store = RetrievalStore(Path(folder) / "chroma")
        for data_set in load_sets(args.data):
            results.append({"name": data_set["name"], "methods": measure(store, data_set["documents"])})
            print(results[-1]["name"], json.dumps(results[-1]["methods"]), flush=True)
    write_json(args.out / "retrieval.json", results)
    (args.out / "retrieval.md").write_text(report(results, when, description, time.monotonic() - started))
    print(f"wrote {args.out / 'retrieval.md'}")


if __name__ == "__main__":
    main()
