"""The retrieval store: documents as embedded chunks in one Chroma collection, searched and chosen by question.

Where. In a folder (Chroma's embedded ``PersistentClient``), or on a Chroma server (``chroma run``) given by its
URL, which any number of processes may share: the server keeps the one index, so each sees what the others add.

Concurrency in a folder. Chroma does not support several processes using one folder: each process keeps its own
in-memory vector index, so a process does not find, in search, chunks that another process added after it
opened the store (``document_ids`` does list them), and concurrent writers risk losing vectors. Safe: one
process at a time holds the store (the agent, or one ``lift`` command); another process opened afterwards
sees everything. Within one process any number of :class:`RetrievalStore` objects on one folder share one
client, and threads may share a store. If the folder is removed or replaced while a store is open, the next
call notices it and starts over on what is on disk now (an empty store), instead of reading a ghost of the
old data and failing on the next write.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from lift_tool.errors import ConfigError, InputError, LiftError, ServerError, StorageError
from lift_tool.files import write_problem
from lift_tool.memory.retrieval.batching import batched
from lift_tool.memory.retrieval.bm25 import keyword_ranking
from lift_tool.memory.retrieval.chroma import server_client, shared_client, write_failed
from lift_tool.memory.retrieval.chunking import chunk_text
from lift_tool.memory.retrieval.embedder import MAX_MODEL_TOKENS, OfflineEmbedder, embedding_tokenizer
from lift_tool.memory.retrieval.fusion import fuse_rankings

COLLECTION = "lift_chunks"
# choose_documents: a document matches when its best chunk is at least this similar to the question, and
# when it is within the margin of the best document. Measured by benchmarks/bench_doc_choice.py (report in
# benchmarks/results/doc_choice/doc_choice.md): on 6 real documents 0.35 is the lowest threshold that gives none of 22
# general-knowledge questions a document, and keeps 90% of the 767 questions written for the documents (96%
# pick the right one at any threshold). A margin of 0.05 returns a second document for 8% of the questions on
# long documents and lifts "the right one is returned" from 93.5% to 97.6% there; wider margins add no more.
DEFAULT_DOC_THRESHOLD = 0.35
DEFAULT_DOC_MARGIN = 0.05
SEARCH_METHODS = ("hybrid", "dense", "keyword")
# Hybrid search fuses the dense ranking's best DENSE_CANDIDATES with every chunk that shares a word with the
# question.
DENSE_CANDIDATES = 50


@dataclass(frozen=True)
class RetrievedChunk:
    """A chunk found by a search: its document, position (chunk index and character offsets), text and score."""

    doc_id: str
    title: str
    index: int
    start: int
    end: int
    text: str
    score: float  # cosine similarity to the question, higher is better


@dataclass(frozen=True)
class DocumentMatch:
    """A stored document that a question seems to be about, with the retrieval score that says so."""

    doc_id: str
    title: str
    score: float  # similarity of the document's best chunk to the question
    best: RetrievedChunk  # that chunk


def _chunk_id(doc_id: str, index: int) -> str:
    """A chunk's id in the collection; hybrid search matches the two rankings by it."""
    return f"{doc_id}:{index}"


def _cosine(a: Any, b: Any) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / ((np.linalg.norm(a) * np.linalg.norm(b)) or 1.0))


def _server_errors(method):
    """On a server, what the client raises when the server stops answering becomes one clear ServerError."""

    @functools.wraps(method)
    def wrapper(self: "RetrievalStore", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except LiftError:
            raise
        except Exception as err:
            if self.url is None:
                raise
            raise ServerError(f"the Chroma server at {self.location} stopped answering ({type(err).__name__}: {err}); "
                              "restart it, or unset LIFT_CHROMA__URL to keep the retrieval store in the memory "
                              "folder") from err

    return wrapper


class RetrievalStore:
    """Documents as embedded chunks in one Chroma collection (cosine distance), in the folder ``path`` or on the
    Chroma server at ``url`` (give one of the two).

    Opening is lazy: constructing a store costs nothing; the first call opens (or creates) the folder or the
    server's collection.
    """

    def __init__(self, path: Path | None = None, embedder: Any = None, chunk_tokens: int = 200,
                 chunk_overlap: int = 50, url: str | None = None, collection: str = COLLECTION):
        if (path is None) == (url is None):
            raise ConfigError("a retrieval store lives in a folder or on a server: give path or url, not both")
        limit = MAX_MODEL_TOKENS - 2  # room for [CLS] and [SEP]
        if not 1 <= chunk_tokens <= limit:
            raise ConfigError(f"chunk_tokens must be in [1, {limit}] for the embedding model, got {chunk_tokens}")
        if not 0 <= chunk_overlap < chunk_tokens:
            raise ConfigError(f"chunk_overlap must be in [0, chunk_tokens), got {chunk_overlap}")
        # Resolved: Chroma keys its per-process cache by the path string, so "a/../x" and "x" must be one key.
        self.path = Path(path).expanduser().resolve() if path is not None else None
        self.url = url.rstrip("/") if url is not None else None
        self.collection_name = collection
        self.embedder = embedder if embedder is not None else OfflineEmbedder()
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self._collection_handle: tuple[Any, Any] | None = None  # (client, collection)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"RetrievalStore({self.location!r})"

    @property
    def location(self) -> str:
        """The folder, or the server URL and collection, for messages."""
        return str(self.path) if self.path is not None else f"{self.url} (collection {self.collection_name})"

    # -- opening

    def _collection(self, writing: bool = False) -> Any:
        with self._lock:
            client = shared_client(str(self.path), writing) if self.url is None else server_client(self.url)
            if self._collection_handle is None or self._collection_handle[0] is not client:
                try:
                    # On a server the collection records no embedding function of ours (lift-tool passes the
                    # vectors), so a plain Chroma client opens it with its default one: the same all-MiniLM-L6-v2.
                    collection = client.get_or_create_collection(
                        self.collection_name, embedding_function=self.embedder if self.url is None else None,
                        configuration={"hnsw": {"space": "cosine"}},
                    )
                except ValueError as err:  # e.g. the collection was made with another embedding function
                    raise ConfigError(f"cannot open the retrieval store in {self.location}: {err}") from None
                self._collection_handle = (client, collection)
            return self._collection_handle[1]

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around writes: what Chroma raises (an ``InternalError`` that says "database or disk is full", say) becomes
        a StorageError that names the cause and the store."""
        try:
            yield
        except LiftError:
            raise
        except Exception as err:
            if self.path is None:
                raise ServerError(f"the Chroma server at {self.location} refused a write ({type(err).__name__}: "
                                  f"{err}); unset LIFT_CHROMA__URL to keep the retrieval store in the memory "
                                  "folder") from err
            write_failed(str(self.path))  # the next write starts on a new client: this one may hang
            cause = write_problem(self.path, err) or f"{type(err).__name__}: {err}"
            raise StorageError(f"could not write to the retrieval store in {self.path} ({cause})") from err

    def _tokenizer(self) -> Any:
        return getattr(self.embedder, "tokenizer", None) or embedding_tokenizer()

    # -- documents

    def add_document(self, doc_id: str, title: str, text: str, progress: bool = False) -> int:
        """Index ``text`` under ``doc_id``; returns the number of chunks.

        Idempotent: the same document (same id, title, text and chunking) is skipped without embedding
        anything; a changed one replaces the old chunks. An add that fails or is interrupted removes what it
        wrote; chunk 0 is written last, so even a killed process never leaves a document that counts as present.
        A write that Chroma refuses (a full disk, say) is a StorageError that names the cause.
        """
        if not doc_id:
            raise InputError("a document id must not be empty")
        chunks = chunk_text(text, self._tokenizer(), self.chunk_tokens, self.chunk_overlap)
        if not chunks:
            raise InputError(f"document {title or doc_id!r} has no text to index")
        stamp = {
            "title": title or "",
            "n_chunks": len(chunks),
            "text_sha": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
            "chunking": f"{self.chunk_tokens}/{self.chunk_overlap}",
        }
        with self._lock, self._writing():
            collection = self._collection(writing=True)
            if self._stored_stamp(collection, doc_id) == stamp:
                return len(chunks)
            collection.delete(where={"doc_id": doc_id})
            order = chunks[1:] + chunks[:1]
            try:
                from tqdm.auto import tqdm

                with tqdm(total=len(chunks), desc="indexing", unit="chunk", disable=not progress) as bar:
                    for batch in batched(order, 64):
                        collection.upsert(  # upsert: another process on the same server may write it too
                            ids=[_chunk_id(doc_id, c.index) for c in batch],
                            documents=[c.text for c in batch],
                            embeddings=self.embedder([c.text for c in batch]),
                            metadatas=[
                                {"doc_id": doc_id, "index": c.index, "start": c.start, "end": c.end, **stamp}
                                for c in batch
                            ],
                        )
                        bar.update(len(batch))
            except BaseException:
                # Leave nothing half-indexed behind (Ctrl-C, a full disk, the folder removed meanwhile).
                try:
                    collection.delete(where={"doc_id": doc_id})
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    pass
                raise
        return len(chunks)

    @staticmethod
    def _stored_stamp(collection: Any, doc_id: str) -> dict | None:
        found = collection.get(ids=[_chunk_id(doc_id, 0)], include=["metadatas"])
        if not found["ids"]:
            return None
        meta = found["metadatas"][0]
        stamp = {key: meta.get(key) for key in ("title", "n_chunks", "text_sha", "chunking")}
        # Complete only if every chunk is there (a crash between batches leaves some out).
        stored = collection.get(where={"doc_id": doc_id}, include=[])["ids"]
        return stamp if len(stored) == meta.get("n_chunks") else None

    @_server_errors
    def has_document(self, doc_id: str) -> bool:
        return bool(self._collection().get(ids=[_chunk_id(doc_id, 0)], include=[])["ids"])

    def remove_document(self, doc_id: str) -> bool:
        """Delete a document's chunks; returns whether it was there."""
        with self._lock, self._writing():
            collection = self._collection(writing=True)
            present = bool(collection.get(where={"doc_id": doc_id}, include=[], limit=1)["ids"])
            if present:
                collection.delete(where={"doc_id": doc_id})
            return present

    @_server_errors
    def chunks(self, doc_id: str) -> list[RetrievedChunk]:
        """A stored document's chunks in order (score 0: nothing was searched)."""
        found = self._collection().get(where={"doc_id": doc_id}, include=["documents", "metadatas"])
        chunks = [self._chunk(text, meta, 0.0) for text, meta in zip(found["documents"], found["metadatas"])]
        return sorted(chunks, key=lambda chunk: chunk.index)

    @_server_errors
    def document_ids(self) -> list[str]:
        """The ids of the stored documents, sorted."""
        found = self._collection().get(where={"index": 0}, include=["metadatas"])
        return sorted(meta["doc_id"] for meta in found["metadatas"])

    @_server_errors
    def titles(self) -> dict[str, str]:
        """doc_id -> title of the stored documents."""
        found = self._collection().get(where={"index": 0}, include=["metadatas"])
        return {meta["doc_id"]: meta.get("title", "") for meta in found["metadatas"]}

    # -- questions

    def _embed_question(self, question: str) -> Any:
        if not question or not question.strip():
            raise InputError("the question is empty")
        return self.embedder.embed_query([question])[0]

    @staticmethod
    def _where(doc_ids: Sequence[str] | None) -> dict | None:
        if doc_ids is None:
            return None
        ids = list(dict.fromkeys(doc_ids))
        return {"doc_id": ids[0]} if len(ids) == 1 else {"doc_id": {"$in": ids}}

    @staticmethod
    def _chunk(text: str, meta: dict, score: float) -> RetrievedChunk:
        return RetrievedChunk(doc_id=meta["doc_id"], title=meta.get("title", ""), index=int(meta["index"]),
                              start=int(meta["start"]), end=int(meta["end"]), text=text, score=score)

    def _query(self, vector: Any, k: int, doc_ids: Sequence[str] | None) -> list[RetrievedChunk]:
        """The ``k`` chunks nearest ``vector`` (cosine), within ``doc_ids`` if given."""
        collection = self._collection()
        size = collection.count()
        if size == 0 or k < 1 or (doc_ids is not None and len(doc_ids) == 0):
            return []
        found = collection.query(
            query_embeddings=[vector],
            n_results=min(k, size),
            where=self._where(doc_ids),
            include=["documents", "metadatas", "distances"],
        )
        # Chroma's cosine distance is 1 - cosine similarity.
        return [self._chunk(text, meta, 1.0 - float(distance))
                for text, meta, distance in zip(found["documents"][0], found["metadatas"][0], found["distances"][0])]

    @_server_errors
    def search(self, question: str, k: int = 4, doc_ids: list[str] | None = None,
               method: str = "hybrid") -> list[RetrievedChunk]:
        """The ``k`` chunks most relevant to ``question``, best first, within ``doc_ids`` if given.

        ``method``: "dense" ranks by embedding similarity, "keyword" by BM25 over the question's words, "hybrid"
        (the default) fuses the two rankings. Every chunk's ``score`` is its cosine similarity to the question,
        whichever ranking found it.
        """
        if method not in SEARCH_METHODS:
            raise ConfigError(f"unknown search method {method!r}: use one of {', '.join(SEARCH_METHODS)}")
        vector = self._embed_question(question)
        if method == "dense":
            return self._query(vector, k, doc_ids)
        if k < 1 or (doc_ids is not None and len(doc_ids) == 0):
            return []
        collection = self._collection()
        # BM25 needs every chunk in scope: its word statistics are over all of them.
        stored = collection.get(where=self._where(doc_ids), include=["documents"])
        ranking = keyword_ranking(question, dict(zip(stored["ids"], stored["documents"])))
        if method == "hybrid":
            nearest = self._query(vector, DENSE_CANDIDATES, doc_ids)
            ranking = fuse_rankings([_chunk_id(c.doc_id, c.index) for c in nearest], ranking)
        best = ranking[:k]
        if not best:
            return []
        found = collection.get(ids=best, include=["documents", "metadatas", "embeddings"])
        chunks = {id_: self._chunk(text, meta, _cosine(vector, embedding))
                  for id_, text, meta, embedding in zip(found["ids"], found["documents"], found["metadatas"],
                                                        found["embeddings"])}
        return [chunks[id_] for id_ in best if id_ in chunks]  # Chroma returns them in its own order

    @_server_errors
    def choose_documents(
        self,
        question: str,
        threshold: float = DEFAULT_DOC_THRESHOLD,
        max_docs: int = 3,
        margin: float = DEFAULT_DOC_MARGIN,
    ) -> list[DocumentMatch]:
        """Which stored documents ``question`` is about, best first; [] when it is about none of them.

        A document's score is the similarity of its best chunk to the question. Documents below
        ``threshold``, or more than ``margin`` behind the best one, are left out. Max-over-chunks rather than
        a mean: a question is usually about one passage, and a long document should not be diluted by the
        rest of its text. The default threshold was measured (see ``DEFAULT_DOC_THRESHOLD``).
        """
        if max_docs < 1:
            return []
        # Enough chunks that every document that could be in the answer shows up with its best chunk.
        hits = self._query(self._embed_question(question), k=max(64, 16 * max_docs), doc_ids=None)
        best: dict[str, RetrievedChunk] = {}
        for hit in hits:  # best first, so the first hit of a document is its best chunk
            best.setdefault(hit.doc_id, hit)
        if not best:
            return []
        top = max(hit.score for hit in best.values())
        matches = [
            DocumentMatch(doc_id=d, title=hit.title, score=hit.score, best=hit)
            for d, hit in best.items()
            if hit.score >= threshold and hit.score >= top - margin
        ]
        return sorted(matches, key=lambda m: -m.score)[:max_docs]
