"""How sure must the adapter be of its answer for lift+rag to keep it? A sweep of
``settings.retrieval.adapter_min_probability`` over the quality benchmark's own runs.

lift+rag answers with the adapter and the retrieved passages. When the model gave some token of that answer less
than the setting's probability, lift+rag sets the answer aside and reads the passages without the adapter, as rag
does. This script takes the adapters and rag answers of the runs that ``bench_quality.py`` left in its work folders
(run it first), asks every question once more with lift+rag keeping every adapter answer (setting 0; an answer
that says the document does not tell is set aside whatever the setting), and scores each threshold: the adapter's
answer where it was sure enough, the rag answer elsewhere. The report also gives the ceiling of every rule of this
kind (the better of the two answers on each question) and, with ``--mixed WEIGHT``, the score of one decoding that
mixes the adapter's and the base model's next-token log-probabilities over the same passages.

    python benchmarks/bench_adapter_trust.py [--runs qwen2.5-coder-0.5b:squad,smollm2-135m:loogle-short,...]
        [--work DIR] [--out DIR] [--mixed WEIGHT]

Writes one report per model of the runs: benchmarks/results/adapter_trust/MODEL.md, with MODEL.json.gz (the
sweep and every adapter answer).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import (
    WORK, command_with_environment, find_work_folder, header, machine, model_tag, open_run, read_json, results_dir,
    started_at, write_json,
)

RUNS = [f"{model}:{name}" for model in ("qwen2.5-coder-0.5b", "smollm2-135m")
        for name in ("squad", "loogle-short", "loogle-long")]
THRESHOLDS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def adapter_answers(run: tuple) -> list[dict]:
    """Every question of the run (``open_run``'s tuple, threshold 0) asked again with lift+rag keeping every adapter
    answer; one row per question with the adapter's answer, its score and least token probability, and the run's
    rag row."""
    from lift_tool.eval import score_answer

    lift, documents, questions, rag_rows = run
    out = []
    for number, rag in enumerate(rag_rows, 1):
        question = questions[(rag["doc_id"], rag["index"])]
        answer = lift.ask(question.prompt, [documents[rag["doc_id"]]["lift_doc_id"]], mode="lift+rag")
        adapter = {**rag, "method": "adapter", "prediction": answer.text, **score_answer(question, answer.text),
                   "latency_s": round(answer.seconds, 3)}
        out.append({"adapter": adapter, "rag": rag, "least_token_probability": answer.least_token_probability,
                    "said_not_told": answer.mode == "rag"})  # set aside at any threshold: it is the rag answer
        print(f"  [{number}/{len(rag_rows)}] p={answer.least_token_probability:.2f} {answer.text[:60]!r}", flush=True)
    return out


def mixed_answers(run: tuple, weight: float) -> list[dict]:
    """Every question of the run answered by one greedy decoding over rag's passages that mixes, token by token,
    the adapter's log-probabilities (``weight``) with the base model's (1 - ``weight``): a product of the two
    models rather than a choice between their answers. One row per question, as the run's rows."""
    import torch

    from lift_tool.answering import QuestionPrompt
    from lift_tool.eval import score_answer
    from lift_tool.generation import _stop_ids, cache_keyword, fit_context
    from lift_tool.prompts import render

    lift, documents, questions, rag_rows = run
    tokenizer, pool = lift.loaded.tokenizer, lift.generator
    stops, settings = set(_stop_ids(tokenizer)), lift.settings

    cache = cache_keyword()  # the key/value cache's name in this transformers version

    def next_logprobs(model, ids, past):
        output = model(input_ids=ids, **{cache: past}, use_cache=True)
        return torch.log_softmax(output.logits[0, -1].float(), dim=-1), output[cache]

    out = []
    for number, rag in enumerate(rag_rows, 1):
        question = questions[(rag["doc_id"], rag["index"])]
        entry = lift.registry.resolve(documents[rag["doc_id"]]["lift_doc_id"])
        adapter = lift.registry.adapter_for(entry.doc_id, lift.loaded.fingerprint, lift.loaded.name)
        started = time.monotonic()
        chunks = lift.answering._retrieve(question.prompt, [entry])  # rag's passages, as lift.ask finds them
        prompt = QuestionPrompt(question.prompt)
        room = prompt.room(tokenizer, lift.context_window, [entry.title], settings.max_new_tokens)
        prompt.passages = fit_context(tokenizer, "\n\n".join(chunk.text for chunk in chunks), room)
        ids = tokenizer(render(tokenizer, prompt.messages([entry.title]), True), return_tensors="pt",
                        add_special_tokens=False)["input_ids"].to(pool.model.device)
        written, with_adapter, without = [], None, None
        with torch.inference_mode():
            for _ in range(settings.max_new_tokens):
                with pool.activate(adapter) as model:
                    adapter_lp, with_adapter = next_logprobs(model, ids, with_adapter)
                with pool.base() as model:
                    base_lp, without = next_logprobs(model, ids, without)
                token = int(torch.argmax(weight * adapter_lp + (1 - weight) * base_lp))
                if token in stops:
                    break
                written.append(token)
                ids = torch.tensor([[token]], device=pool.model.device)
        text = tokenizer.decode(written, skip_special_tokens=True).strip()
        out.append({**rag, "method": "mixed", "prediction": text, **score_answer(question, text),
                    "latency_s": round(time.monotonic() - started, 3)})
        print(f"  [{number}/{len(rag_rows)}] mixed {text[:60]!r}", flush=True)
    return out


def sweep(answers: list[dict], documents: dict) -> list[dict]:
    """Per threshold: F1 of lift+rag, how often it kept the adapter's answer, and its mean seconds per question
    (the adapter's answer, plus the rag answer where it was set aside)."""
    from lift_tool.eval import summarise

    lines = []
    for threshold in THRESHOLDS:
        rows, seconds, kept = [], [], 0
        for item in answers:
            keep = not item["said_not_told"] and item["least_token_probability"] >= threshold
            kept += keep
            rows.append({**(item["adapter"] if keep else item["rag"]), "method": "lift+rag"})
            seconds.append(item["adapter"]["latency_s"] + (0 if keep else item["rag"]["latency_s"]))
        summary = summarise(rows, documents)["lift+rag"]
        lines.append({"threshold": threshold, "f1": summary["f1"], "kept_percent": round(100 * kept / len(answers), 1),
                      "mean_s": round(statistics.fmean(seconds), 2)})
    return lines


def ceiling(answers: list[dict], documents: dict) -> dict:
    """What the best possible rule of this kind reaches: on each question the better of the adapter's answer and
    the rag answer (by the question's score), and how often the adapter's was the better one."""
    from lift_tool.eval import summarise

    rows = [{**max(item["rag"], item["adapter"], key=lambda row: row["score"]), "method": "lift+rag"}
            for item in answers]
    better = sum(item["adapter"]["score"] > item["rag"]["score"] for item in answers)
    return {"f1": summarise(rows, documents)["lift+rag"]["f1"],
            "adapter_better_percent": round(100 * better / len(answers), 1)}


def render(model: str, results: dict, default: float, started: str, minutes: float, description: str) -> str:
    """The report of one model's runs."""
    lines = [
        *header(f"lift+rag: how sure the adapter must be of its answer: `{model}`", started, description, minutes,
                command_with_environment()),
        "lift+rag answers with the document's adapter and the retrieved passages. It keeps that answer when the model "
        "gave every token of it at least the threshold's probability, and otherwise answers from the passages "
        "without the adapter, as rag does. The runs are those of `bench_quality.py` (its reports: "
        "`results/quality/MODEL-SET.md`): the same adapters, and its rag answers. Every question was asked again "
        "with lift+rag keeping every adapter answer (threshold 0) but one that says the document does not tell, and "
        "each threshold below takes the adapter's answer where the model was sure enough and the rag answer "
        "elsewhere. Seconds: the adapter's answer, plus the rag answer where it was set aside.",
        "",
        f"The default is {default:g}: keep the adapter's answer when each of its tokens was at least as likely as "
        "not. It was set from the first sweep of this kind (on both models' first quality runs), so it is not a "
        "held-out choice; it is the even-odds point, not the best point of any one run.",
        "",
    ]
    for run, result in results.items():
        lines += [f"## {run}", "",
                  f"{result['questions']} questions. For comparison: context F1 {result['context_f1']:.1f}, "
                  f"rag F1 {result['rag_f1']:.1f}.", "",
                  "| threshold | lift+rag F1 | adapter answer kept % | s/question |", "|---|---|---|---|"]
        for line in result["sweep"]:
            mark = " (default)" if line["threshold"] == default else ""
            lines.append(f"| {line['threshold']:g}{mark} | {line['f1']:.1f} | {line['kept_percent']:.0f} | "
                         f"{line['mean_s']:.2f} |")
        best = result["ceiling"]
        if "mixed" in result:
            mixed = result["mixed"]
            lines += ["", f"One decoding that mixes the two models token by token (log-probabilities weighted "
                          f"{mixed['weight']:g} for the adapter, {1 - mixed['weight']:g} for the base model, over "
                          f"rag's passages): F1 **{mixed['f1']:.1f}**, {mixed['mean_s']:.2f} s per question."]
        lines += ["", "No threshold, and no other rule that chooses between the two answers question by question, "
                      f"can score above **{best['f1']:.1f}**: the better of the adapter's answer and the rag answer on each "
                      f"question. The adapter's answer is the better one on {best['adapter_better_percent']:.0f}% of "
                      "the questions.", ""]
    lines.append(f"Rows (the sweep and every adapter answer with its least token probability): "
                 f"`{model_tag(model)}.json.gz`.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help="MODEL:SET pairs (sets of bench_quality.py)")
    parser.add_argument("--work", type=Path, default=WORK, help="bench_quality.py's --work")
    parser.add_argument("--out", type=Path, default=results_dir("adapter_trust"))
    parser.add_argument("--mixed", type=float, default=None, metavar="WEIGHT",
                        help="also answer with one decoding that mixes the adapter's log-probabilities (this weight) "
                             "with the base model's")
    args = parser.parse_args()
    from lift_tool.eval import summarise

    started = started_at()
    description = machine()
    t0 = time.monotonic()
    results: dict[str, dict] = {}  # model -> run -> result
    for run in args.runs.split(","):
        model, name = run.split(":")
        folder = find_work_folder(args.work, model, name)
        print(f"{run}: {folder}", flush=True)
        documents = read_json(folder / "documents.json")
        rows = read_json(folder / "results.json")
        reference = summarise([r for r in rows if r["method"] in ("context", "rag")], documents)
        # One Lift on the run's memory for both passes (the threshold matters only to adapter_answers' lift+rag).
        opened = open_run(folder, name, adapter_min_probability=0.0)
        answers = adapter_answers(opened)
        results.setdefault(model, {})[run] = {
            "context_f1": reference["context"]["f1"], "rag_f1": reference["rag"]["f1"],
            "questions": len(answers), "sweep": sweep(answers, documents), "ceiling": ceiling(answers, documents),
            "answers": [{"doc_id": a["rag"]["doc_id"], "index": a["rag"]["index"],
                         "adapter": a["adapter"]["prediction"], "adapter_score": a["adapter"]["score"],
                         "rag_score": a["rag"]["score"],
                         "least_token_probability": round(a["least_token_probability"], 4)}
                        for a in answers]}
        if args.mixed is not None:
            mixed = mixed_answers(opened, args.mixed)
            results[model][run]["mixed"] = {"weight": args.mixed, "f1": summarise(mixed, documents)["mixed"]["f1"],
                                            "mean_s": round(statistics.fmean(r["latency_s"] for r in mixed), 2)}
    minutes = (time.monotonic() - t0) / 60

    from lift_tool.config import Settings

    default = Settings().retrieval.adapter_min_probability
    for model, runs in results.items():
        report = render(model, runs, default, started, minutes, description)
        write_json(args.out / f"{model_tag(model)}.json.gz", runs)
        (args.out / f"{model_tag(model)}.md").write_text(report)
        print(report)


if __name__ == "__main__":
    main()
