"""``LiftRetriever``: lift-tool's retrieval as a LangChain ``BaseRetriever``.

    from lift_tool.retriever import LiftRetriever

    retriever = LiftRetriever(k=4)                       # the process's shared memory (LIFT_* settings)
    docs = retriever.invoke("Who chairs the board?")     # or await retriever.ainvoke(...)
    docs[0].metadata  # {"doc_id", "title", "chunk", "start", "end", "score", "source"}

Each ``Document`` is one chunk of a stored document, best first, ranked by the memory's search (hybrid by
default: embeddings and BM25 fused). ``start`` and ``end`` are the chunk's character offsets in the document's
text, ``score`` its cosine similarity to the query. ``documents`` (ids, id prefixes or titles) keeps the search
within those documents; ``k`` may also be given per call: ``retriever.invoke(query, k=2)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field

if TYPE_CHECKING:
    from lift_tool.lift import Lift
    from lift_tool.memory.retrieval import RetrievedChunk


class LiftRetriever(BaseRetriever):
    """Chunks of the documents in lift-tool's memory, most relevant first, with their source in the metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    lift: Any = Field(default=None, exclude=True)  # a Lift; default: the shared one for the LIFT_* settings
    k: int = Field(default=4, ge=1, description="how many chunks to return")
    documents: list[str] | None = None  # ids, id prefixes or titles to search within; None: every document
    search: Literal["hybrid", "dense", "keyword"] | None = None  # default: the memory's setting (retrieval.search)

    def memory(self) -> "Lift":
        if self.lift is None:
            from lift_tool.lift import shared_lift

            self.lift = shared_lift()
        return self.lift

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None, documents: list[str] | None = None) -> list[Document]:
        lift = self.memory()
        refs = documents if documents is not None else self.documents
        doc_ids = None if refs is None else [lift.resolve(ref).doc_id for ref in refs]
        method = self.search or lift.settings.retrieval.search
        chunks = lift.store.search(query, k=k or self.k, doc_ids=doc_ids, method=method)
        return [as_document(chunk) for chunk in chunks]

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       k: int | None = None, documents: list[str] | None = None) -> list[Document]:
        # Search embeds the query and reads Chroma: in a worker thread, so the event loop goes on meanwhile.
        return await run_in_executor(None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(),
                                     k=k, documents=documents)


def as_document(chunk: "RetrievedChunk") -> Document:
    """A retrieved chunk as a LangChain ``Document``, its source in the metadata."""
    return Document(
        id=f"{chunk.doc_id}:{chunk.index}",
        page_content=chunk.text,
        metadata={"doc_id": chunk.doc_id, "title": chunk.title, "chunk": chunk.index, "start": chunk.start,
                  "end": chunk.end, "score": chunk.score, "source": chunk.title or chunk.doc_id},
    )


__all__ = ["LiftRetriever", "as_document"]
