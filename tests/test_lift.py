import pytest

from lift_tool.config import Settings
from lift_tool.errors import ConfigError, InputError, UnknownDocumentError
from lift_tool.answering import NOTHING_MATCHES, keeps_adapter_answer
from lift_tool.generation import Reply
from lift_tool.lift import Lift

TEXT = """# Brimley

Brimley was founded in 1841 by the engineer Agatha Moorcroft. The canal is 14 kilometres long.
The Brimley Canal Company has twelve barges. A bridge called the Wendle Arch crosses the canal.
"""


@pytest.fixture
def lift(tiny_settings):
    training = tiny_settings.training.model_copy(update={"epochs": 0.3, "batch_tokens": 512})
    return Lift(tiny_settings.model_copy(update={"training": training, "max_new_tokens": 4}))


def test_absorb_then_cache_hit_then_forget(lift):
    first = lift.absorb(TEXT, progress=False)
    assert not first.cached and first.document.route == "absorb"
    second = lift.absorb(TEXT, progress=False)
    assert second.cached and second.adapter.key == first.adapter.key
    assert lift.store.has_document(first.document.doc_id)
    assert [d.doc_id for d in lift.documents()] == [first.document.doc_id]

    lift.forget("Brimley")
    assert lift.documents() == [] and not lift.store.has_document(first.document.doc_id)
    with pytest.raises(UnknownDocumentError):
        lift.ask("Who founded Brimley?", ["Brimley"])


def test_every_mode_answers_and_reports_itself(lift):
    lift.settings.retrieval.adapter_min_probability = 0.0  # keep the (random) adapter's answers, however unsure
    doc = lift.absorb(TEXT, progress=False).document
    for mode in ("base", "lift", "lift+context", "rag", "lift+rag", "context"):
        answer = lift.ask("Who founded Brimley?", [doc.doc_id[:8]], mode=mode)
        assert answer.mode == mode and answer.documents == [(doc.doc_id, "Brimley")]
        assert bool(answer.chunks) == (mode in {"rag", "lift+rag"})
    assert lift.ask("Who founded Brimley?", [doc.doc_id]).mode == "lift+rag"  # auto, with an adapter


@pytest.mark.parametrize("search", ["hybrid", "dense", "keyword"])
def test_rag_ranks_chunks_with_the_configured_search(tiny_settings, search):
    retrieval = tiny_settings.retrieval.model_copy(update={"search": search, "chunk_tokens": 16, "chunk_overlap": 4})
    lift = Lift(tiny_settings.model_copy(update={"retrieval": retrieval, "max_new_tokens": 4}))
    doc = lift.index(TEXT)
    question = "Which bridge crosses the canal?"
    answer = lift.ask(question, [doc.doc_id], mode="rag")
    expected = lift.store.search(question, k=retrieval.k, doc_ids=[doc.doc_id], method=search)
    assert len(expected) > 1 and answer.chunks == expected


def test_lift_rag_sets_aside_an_adapter_answer_the_model_is_unsure_of(lift):
    doc = lift.absorb(TEXT, progress=False).document
    question = "Who founded Brimley?"

    lift.settings.retrieval.adapter_min_probability = 0.0
    kept = lift.ask(question, [doc.doc_id], mode="lift+rag")
    assert kept.mode == "lift+rag" and 0 < kept.least_token_probability < 1
    # The adapter's answer with the retrieved passages in the prompt:
    passages = "\n\n".join(chunk.text for chunk in kept.chunks)
    assert kept.text == lift.ask(question, [doc.doc_id], mode="lift", context=passages).text

    lift.settings.retrieval.adapter_min_probability = min(1.0, kept.least_token_probability * 1.01)
    streamed = []
    set_aside = lift.ask(question, [doc.doc_id], mode="lift+rag", on_text=streamed.append)
    rag = lift.ask(question, [doc.doc_id], mode="rag")
    assert set_aside.mode == "rag" and set_aside.chunks == rag.chunks
    assert (set_aside.text, set_aside.least_token_probability) == (rag.text, rag.least_token_probability)
    assert streamed == [set_aside.text]  # only the answer given, not the one set aside


def test_lift_context_is_the_adapter_with_the_document_in_the_prompt(lift):
    doc = lift.absorb(TEXT, progress=False).document
    question = "Who founded Brimley?"
    answer = lift.ask(question, [doc.doc_id], mode="lift+context")
    assert answer.mode == "lift+context" and not answer.chunks
    assert answer.text == lift.ask(question, [doc.doc_id], mode="lift", context=TEXT).text


def test_lift_rag_keeps_a_sure_answer_unless_it_says_the_document_does_not_tell():
    assert keeps_adapter_answer(Reply("Agatha Moorcroft", 0.9), min_probability=0.5)
    assert not keeps_adapter_answer(Reply("Agatha Moorcroft", 0.4), min_probability=0.5)
    assert keeps_adapter_answer(Reply("Agatha Moorcroft", 0.4), min_probability=0.0)
    # However sure: the retrieved passages may tell what the adapter did not learn.
    assert not keeps_adapter_answer(Reply("The document does not say.", 0.99), min_probability=0.5)
    assert not keeps_adapter_answer(Reply("The document does not say.", 0.99), min_probability=0.0)


def test_document_is_chosen_by_the_question(lift):
    lift.absorb(TEXT, progress=False)
    lift.index("The Harlow lighthouse was painted red in 1902 and stands on Gull Rock.", title="Harlow lighthouse")
    assert lift.ask("Who founded Brimley and when?").documents[0][1] == "Brimley"
    assert lift.ask("What colour is the Harlow lighthouse?").documents[0][1] == "Harlow lighthouse"
    off_topic = lift.ask("What is the boiling point of mercury?")
    assert off_topic.mode == "none" and off_topic.text == NOTHING_MATCHES


def test_index_only_documents_have_no_adapter(lift):
    doc = lift.index("The Harlow lighthouse was painted red in 1902.", title="Harlow lighthouse")
    assert doc.route == "retrieve" and doc.adapters == []
    assert lift.ask("What colour is the lighthouse?", ["Harlow lighthouse"]).mode == "context"  # auto: it fits
    with pytest.raises(UnknownDocumentError, match="no adapter"):
        lift.ask("What colour is the lighthouse?", ["Harlow lighthouse"], mode="lift")


def test_interrupted_absorption_leaves_memory_as_it_was(lift):
    lift.index("The Harlow lighthouse was painted red in 1902.", title="Harlow lighthouse")
    before = [(d.doc_id, d.route, len(d.adapters)) for d in lift.documents()]

    def interrupt(report):
        raise KeyboardInterrupt

    with pytest.raises(Exception, match="interrupted"):
        lift.absorb(TEXT, progress=False, on_step=interrupt)
    assert [(d.doc_id, d.route, len(d.adapters)) for d in lift.documents()] == before
    assert list(lift.registry.staging_dir.iterdir()) == []
    assert lift.registry.verify().ok


def test_an_interrupted_absorption_is_resumed_and_its_checkpoint_removed_once_stored(lift):
    lift.settings.training.checkpoint_seconds = 1e-9  # a checkpoint after every step

    def interrupt(report):
        if report.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(Exception, match="saved at step 4"):
        lift.absorb(TEXT, progress=False, on_step=interrupt)
    assert lift.documents() == [] and list(lift.registry.staging_dir.iterdir()) == []
    unfinished = list(lift.registry.unfinished_dir.iterdir())
    assert len(unfinished) == 1 and (unfinished[0] / "checkpoint.safetensors").is_file()
    assert lift.registry.verify().ok

    result = lift.absorb(TEXT, progress=False)
    manifest = lift.registry.get_document(result.document.doc_id).adapters[0].manifest
    assert manifest.resumed_at_step == 4 and manifest.steps == manifest.planned_steps
    assert not unfinished[0].exists()


def test_forgetting_a_document_removes_its_unfinished_absorption(lift):
    doc = lift.index(TEXT)
    lift.settings.training.checkpoint_seconds = 1e-9

    def interrupt(report):
        if report.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(Exception, match="interrupted"):
        lift.absorb(TEXT, progress=False, on_step=interrupt)
    assert lift.registry.unfinished_path(doc.doc_id).is_dir()
    lift.forget(doc.doc_id)
    assert not lift.registry.unfinished_path(doc.doc_id).exists()


def test_bad_requests(lift):
    with pytest.raises(InputError, match="empty"):
        lift.ask("   ")
    with pytest.raises(ConfigError, match="unknown mode"):
        lift.ask("Who?", mode="telepathy")
    with pytest.raises(InputError, match="empty"):
        lift.absorb("   \n ")
    with pytest.raises(ConfigError, match="positive"):
        lift.absorb(TEXT, budget_seconds=0)


def test_questions_over_two_documents(lift):
    first = lift.absorb(TEXT, progress=False).document
    second = lift.absorb("# Harlow\n\nThe Harlow lighthouse was painted red in 1902 by Tom Vale.", progress=False).document
    both = [first.doc_id, second.doc_id]
    per_document = lift.ask("Who built it?", both, mode="lift")
    # The tiny random model never abstains, so each document's answer is kept under its title.
    assert per_document.text.startswith("Brimley: ") and "\nHarlow: " in per_document.text
    lift.settings = lift.settings.model_copy(update={"multi_document": "combine"})
    combined = lift.ask("Who built it?", both, mode="lift")
    assert "Brimley: " not in combined.text and combined.documents == [(first.doc_id, "Brimley"), (second.doc_id, "Harlow")]


def test_a_long_document_is_cut_the_same_way_for_every_question(lift):
    from lift_tool.generation import context_budget

    tokenizer = lift.loaded.tokenizer
    short = context_budget(tokenizer, 8192, "Why?", ["Harbour"], 32)
    long = context_budget(tokenizer, 8192, "Why did the harbour master close the harbour in the winter of 1902?",
                          ["Harbour"], 32)
    assert short == long and short % 256 == 0 and 7000 < short < 8192  # so the prefix cache can reuse the cut


@pytest.mark.parametrize("length", [300, 4000])
def test_a_one_line_text_longer_than_a_file_name_is_read_as_text(tiny_settings, length):
    """A paragraph passed as text (by an agent, or as a `lift eval` context) is never taken for a path, however
    long: a name over 255 bytes made the check for a file raise `OSError: File name too long`."""
    from lift_tool.routing import read_source

    text = ("The lighthouse on Gull Rock is painted red and white. " * 80)[:length].strip()
    lift = Lift(tiny_settings)
    assert lift.read(text).text == text
    # The router reads its source through read_source, which also asks whether a path-like string exists.
    assert read_source(lift, text + " See notes.md").text == text + " See notes.md"


def test_a_question_over_the_token_limit_is_refused_at_once(tiny_settings):
    lift = Lift(tiny_settings.model_copy(update={"max_question_tokens": 64}))
    for question in ("why " * 200, "x" * 1_000_000):
        with pytest.raises(InputError, match="LIFT_MAX_QUESTION_TOKENS"):
            lift.ask(question)
        with pytest.raises(InputError, match="LIFT_MAX_QUESTION_TOKENS"):
            lift.chat([{"role": "user", "content": question}])
    assert lift.ask("why " * 10, mode="base").text is not None  # a short one is answered


def test_verify_finds_and_repair_removes_the_chunks_of_a_document_forgotten_half_way(tiny_settings):
    """A forget killed between the registry and the retrieval store left the document's full text in the store,
    where `verify` did not see it and `forget` could no longer reach it."""
    lift = Lift(tiny_settings)
    kept = lift.index("The lighthouse on Gull Rock is painted red and white.", title="Lighthouse")
    gone = lift.index("The ferry to Quillon leaves at nine every morning.", title="Ferry")
    lift.registry.remove(gone.doc_id)  # the process dies here, before the store is told
    found = lift.verify()
    assert found.stale_chunks == [gone.doc_id] and not found.ok
    assert any("which the index does not know" in line for line in found.problems())
    repaired = lift.verify(repair=True)
    assert any("removed the retrieval chunks" in line for line in repaired.repaired)
    assert lift.store.document_ids() == [kept.doc_id] and lift.verify().ok


@pytest.mark.parametrize("loss", ["chunks of one document", "the whole store folder"])
def test_repair_indexes_again_a_document_that_lost_its_chunks(tiny_settings, loss):
    """A document with no chunks (killed while indexing, or the store's folder deleted) was never chosen and lost
    its passages silently."""
    import shutil

    lift = Lift(tiny_settings)
    entry = lift.index("The lighthouse on Gull Rock is painted red and white.", title="Lighthouse")
    if loss == "chunks of one document":
        lift.store.remove_document(entry.doc_id)
    else:
        shutil.rmtree(tiny_settings.home / "chroma")
    found = lift.verify()
    assert found.unindexed == [entry.doc_id] and not found.ok
    lift.verify(repair=True)
    assert lift.store.document_ids() == [entry.doc_id] and lift.verify().ok
    assert lift.ask("What colour is the lighthouse?", [entry.doc_id], mode="rag").chunks  # passages again


STORE_ON_A_FULL_DISK_SCRIPT = """
import json, sys
from pathlib import Path
from lift_tool.config import Settings
from lift_tool.errors import LiftError
from lift_tool.lift import Lift

mount, home, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
home.mkdir()
(home / "chroma").symlink_to(mount)  # the retrieval store alone on the small disk: the registry can still write
lift = Lift(Settings(model=model, home=home, device="cpu", dtype="float32"))
kept = lift.index("The lighthouse on Gull Rock is painted red and white.", title="Lighthouse")


def fill():
    with open(mount / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"x" * 4096)
        except OSError:
            pass


def attempt(action):
    try:
        action()
    except LiftError as err:
        return f"{type(err).__name__}: {err}"
    except Exception as err:
        return f"raw {type(err).__module__}.{type(err).__name__}: {err}"


fill()
ferry = "The ferry to Quillon leaves at nine every morning and comes back at six. " * 40
result = {"index": attempt(lambda: lift.index(ferry, title="Ferry"))}
result["documents"] = sorted(entry.title for entry in lift.documents())
result["chunks_of"] = sorted(lift.store.titles().values())
found = lift.verify()
result["unindexed"] = [lift.resolve(doc_id).title for doc_id in found.unindexed]
result["forget"] = attempt(lambda: lift.forget("Lighthouse"))
(mount / "filler").unlink()
result["stale"] = len(lift.verify().stale_chunks)
lift.verify(repair=True)
result["after_repair"] = lift.verify().problems()
result["chunks_after"] = sorted(lift.store.titles().values())
print("RESULT " + json.dumps(result))
"""


@pytest.mark.integration
def test_a_full_disk_under_the_retrieval_store_is_named_and_repair_mends_it(tiny_model_dir, tmp_path):
    """Chroma out of disk while indexing raised its raw InternalError ("database or disk is full"). The error names
    the cause; the document stays stored, with no half-written chunks; verify sees what is missing and repair, once
    there is space again, indexes it (and removes the chunks of a document forgotten while the disk was full)."""
    from helpers_disk import run_on_small_disk

    result = run_on_small_disk(STORE_ON_A_FULL_DISK_SCRIPT, tmp_path, "16m", (str(tmp_path / "home"), str(tiny_model_dir)),
                               timeout=120)
    assert result["index"].startswith("StorageError: 'Ferry' is stored, but not indexed for retrieval"), result["index"]
    assert "no space left on the disk" in result["index"] and "lift verify --repair" in result["index"]
    assert result["documents"] == ["Ferry", "Lighthouse"] and result["chunks_of"] == ["Lighthouse"]
    assert result["unindexed"] == ["Ferry"]
    if result["forget"] is not None:  # Chroma may need space to delete too
        assert "is forgotten, but its retrieval chunks are not removed yet" in result["forget"], result["forget"]
        assert "no space left on the disk" in result["forget"] and result["stale"] == 1
    assert result["after_repair"] == [] and result["chunks_after"] == ["Ferry"]


SAME_FILE_SCRIPT = """
import json, sys, time
from pathlib import Path
from lift_tool.config import Settings
from lift_tool.lift import Lift

home, model, file, ready, go = sys.argv[1:6]
settings = Settings(model=model, home=Path(home), device="cpu", dtype="float32")
training = settings.training.model_copy(update={"epochs": 0.3, "batch_tokens": 512, "min_steps": 1})
lift = Lift(settings.model_copy(update={"training": training}))
lift.loaded  # loaded first, so that both processes start absorbing at the same moment
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
result = lift.absorb(Path(file), progress=False)
print("RESULT " + json.dumps({"cached": result.cached, "key": result.adapter.key}))
"""


@pytest.mark.integration
def test_two_processes_absorbing_the_same_file_train_it_once(tiny_model_dir, tmp_path):
    """Both trained it: the second process now waits for the first and reuses its adapter."""
    import json
    import subprocess
    import sys
    import time

    file = tmp_path / "brimley.md"
    file.write_text(TEXT)
    go = tmp_path / "go"
    readies = [tmp_path / f"ready-{n}" for n in range(2)]
    processes = [subprocess.Popen([sys.executable, "-c", SAME_FILE_SCRIPT, str(tmp_path / "home"), str(tiny_model_dir),
                                   str(file), str(ready), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for ready in readies]
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready in readies) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert process.returncode == 0 and lines, err
        results.append(json.loads(lines[0][len("RESULT "):]))
    assert sorted(result["cached"] for result in results) == [False, True]
    assert results[0]["key"] == results[1]["key"]
    lift = Lift(Settings(home=tmp_path / "home"))
    assert [len(document.adapters) for document in lift.documents()] == [1] and lift.registry.verify().ok
