"""The retrieval store on a real Chroma server (`chroma run` on 127.0.0.1), against the embedded store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servers import chroma_server, free_port

from lift_tool.errors import ServerError
from lift_tool.eval import load_dataset
from lift_tool.memory.retrieval import RetrievalStore

pytestmark = pytest.mark.integration

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "longdoc_qa_dev.jsonl"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with chroma_server(tmp_path_factory.mktemp("chroma-server") / "data") as url:
        yield url


def test_server_finds_the_same_chunks_as_the_embedded_store(server, tmp_path):
    if not SQUAD.is_file():
        pytest.skip("shared data not present")
    articles = [d for d in load_dataset(SQUAD) if d.doc_id.startswith("squad2dev_")]
    assert articles
    local = RetrievalStore(tmp_path / "chroma")
    remote = RetrievalStore(url=server, collection="squad_same_chunks")
    for article in articles:
        assert local.add_document(article.doc_id, article.doc_id, article.text) == \
            remote.add_document(article.doc_id, article.doc_id, article.text)
    assert remote.document_ids() == local.document_ids()
    questions = [q.prompt for article in articles for q in article.questions]
    differ = []
    for question in questions:
        for method in ("hybrid", "dense"):
            ids = [[(c.doc_id, c.index) for c in store.search(question, k=4, method=method)]
                   for store in (local, remote)]
            if ids[0] != ids[1]:
                differ.append((method, question, ids))
    assert not differ, differ[:3]
    assert len(questions) >= 30


def test_processes_share_one_server(server, tmp_path):
    """Two processes write at once through one server; each then finds what the other wrote."""
    script = """
import sys
from lift_tool.memory.retrieval import RetrievalStore
url, me, other = sys.argv[1:4]
store = RetrievalStore(url=url, collection="shared_by_two")
text = f"The {me} archive keeps the letters of the {me} family, written between 1820 and 1890. " * 40
store.add_document(me, me, text)
import time
deadline = time.monotonic() + 60
while other not in store.document_ids():
    assert time.monotonic() < deadline, "the other process's document never appeared"
    time.sleep(0.2)
best = store.search(f"letters of the {other} family", k=1)[0]
assert best.doc_id == other, best
print("ok", me)
"""
    workers = [subprocess.Popen([sys.executable, "-c", script, server, me, other], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for me, other in (("Harrowgate", "Lindqvist"), ("Lindqvist", "Harrowgate"))]
    for worker in workers:
        out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err[-2000:]
        assert out.startswith("ok")
    assert RetrievalStore(url=server, collection="shared_by_two").document_ids() == ["Harrowgate", "Lindqvist"]


def test_plain_chroma_client_reads_the_collection(server):
    """The collection records no embedding function of lift-tool's: a plain client opens it and queries it with
    vectors of the same model."""
    import chromadb

    store = RetrievalStore(url=server, collection="plain_client")
    store.add_document("gull", "Gull Rock", "The Bellmoor lighthouse on Gull Rock was built by Ada Quill in 1871.")
    host, port = server.removeprefix("http://").split(":")
    collection = chromadb.HttpClient(host=host, port=int(port)).get_collection("plain_client")
    assert collection.configuration.get("embedding_function") is None
    found = collection.query(query_embeddings=[store.embedder(["Who built the lighthouse?"])[0]], n_results=1)
    assert found["ids"] == [["gull:0"]]


def test_a_server_that_does_not_answer_is_one_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match="does not answer.*unset LIFT_CHROMA__URL"):
        RetrievalStore(url=url).document_ids()
    home = tmp_path / "home"
    cli = subprocess.run([str(Path(sys.executable).parent / "lift"), "verify"], capture_output=True, text=True,
                         env={**os.environ, "LIFT_HOME": str(home), "LIFT_CHROMA__URL": url})
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert cli.stderr.count("\n") == 1 and "does not answer" in cli.stderr, cli.stderr
    assert not (home / "chroma").exists()  # nor did it fall back to a store in the memory folder


def test_a_server_that_stops_answering_is_one_clear_error(tmp_path):
    with chroma_server(tmp_path / "data") as url:
        store = RetrievalStore(url=url, collection="stopped")
        store.add_document("gull", "Gull Rock", "The Bellmoor lighthouse on Gull Rock was built by Ada Quill in 1871.")
        assert store.document_ids() == ["gull"]
    with pytest.raises(ServerError, match="stopped answering"):
        store.search("Who built the lighthouse?")
    with pytest.raises(ServerError, match="stopped answering"):
        store.document_ids()
