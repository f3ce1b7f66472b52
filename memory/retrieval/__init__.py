"""Retrieval: every document cut into overlapping chunks, embedded offline, kept in Chroma.

It is the fallback behind the adapters (a question can always be answered from retrieved text) and it also
tells which stored document a question is about (:meth:`RetrievalStore.choose_documents`).

Search is hybrid by default: the chunks nearest the question in embedding space and the chunks that share its
rarer words (BM25) are merged by reciprocal rank fusion. The small embedding model often ranks the passage that
shares the question's names and dates below passages that are only about the same topic; keywords find it
(benchmarks/results/retrieval/retrieval.md).

One idea per module: ``chunking`` (documents into chunks), ``embedder`` (the offline all-MiniLM-L6-v2),
``bm25`` (keyword ranking), ``fusion`` (reciprocal rank fusion), ``batching``, ``chroma`` (the per-process
client and its workarounds) and ``store`` (:class:`RetrievalStore`, which puts them together).
"""

from lift_tool.memory.retrieval.bm25 import keyword_ranking
from lift_tool.memory.retrieval.chunking import Chunk, chunk_text
from lift_tool.memory.retrieval.embedder import (
    EMBEDDING_DIM,
    EMBEDDING_MODEL,
    MAX_MODEL_TOKENS,
    OfflineEmbedder,
    embedding_tokenizer,
)
from lift_tool.memory.retrieval.fusion import fuse_rankings
from lift_tool.memory.retrieval.store import (
    DEFAULT_DOC_MARGIN,
    DEFAULT_DOC_THRESHOLD,
    SEARCH_METHODS,
    DocumentMatch,
    RetrievalStore,
    RetrievedChunk,
)

__all__ = [
    "DEFAULT_DOC_MARGIN",
    "DEFAULT_DOC_THRESHOLD",
    "EMBEDDING_DIM",
    "EMBEDDING_MODEL",
    "MAX_MODEL_TOKENS",
    "SEARCH_METHODS",
    "Chunk",
    "DocumentMatch",
    "OfflineEmbedder",
    "RetrievalStore",
    "RetrievedChunk",
    "chunk_text",
    "embedding_tokenizer",
    "fuse_rankings",
    "keyword_ranking",
]
