"""``LiftRetriever`` on a real memory (tiny model, the real embedder and Chroma): chunks as Documents with their
source, sync and async, within chosen documents, k per call."""

from __future__ import annotations

import asyncio

import pytest

LIGHTHOUSE = ("# The Bellmoor lighthouse\n\nThe Bellmoor lighthouse stands on Gull Rock at the mouth of the Fenn "
              "estuary. It was built in 1901 by the engineer Ada Quill and is painted red and white.")
FERRY = ("# The Vessmoor ferry\n\nThe ferry to Vessmoor leaves the harbour at seven every morning and crosses "
         "the sound in forty minutes. Its captain is Jory Penhallow.")


@pytest.fixture
def lift(tiny_settings):
    from lift_tool.lift import Lift

    lift = Lift(tiny_settings)
    lift.index(LIGHTHOUSE)
    lift.index(FERRY)
    return lift


def test_chunks_come_back_as_documents_with_their_source(lift):
    from langchain_core.documents import Document

    from lift_tool.retriever import LiftRetriever

    docs = LiftRetriever(lift=lift, k=2).invoke("Who built the lighthouse on Gull Rock?")
    assert len(docs) == 2 and all(isinstance(doc, Document) for doc in docs)
    best = docs[0]
    assert best.metadata["title"] == "The Bellmoor lighthouse" and "Ada Quill" in best.page_content
    text = lift.registry.document_text(best.metadata["doc_id"])
    assert text[best.metadata["start"]:best.metadata["end"]] == best.page_content  # offsets into the document
    assert best.id == f"{best.metadata['doc_id']}:{best.metadata['chunk']}" and 0 < best.metadata["score"] <= 1


def test_async_and_k_per_call_and_a_chosen_document(lift):
    from lift_tool.retriever import LiftRetriever

    retriever = LiftRetriever(lift=lift, k=4)
    docs = asyncio.run(retriever.ainvoke("When does the ferry leave?", k=1))
    assert len(docs) == 1 and docs[0].metadata["title"] == "The Vessmoor ferry"
    within = LiftRetriever(lift=lift, documents=["The Bellmoor lighthouse"]).invoke("When does the ferry leave?")
    assert {doc.metadata["title"] for doc in within} == {"The Bellmoor lighthouse"}
    keyword = LiftRetriever(lift=lift, search="keyword", k=1).invoke("Penhallow")
    assert keyword[0].metadata["title"] == "The Vessmoor ferry"
