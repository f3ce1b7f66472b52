"""``Lift``: the one object the CLI, the LangChain tool and the graphs use.

It owns the settings, the answering model (loaded on first use), the adapter registry, the adapter pool on the
model, and the retrieval store, and offers what a user does with a memory of documents:

    lift = Lift()
    doc = lift.absorb("report.pdf")            # LIFT: train an adapter, index the text
    lift.ask("When was it founded?", [doc.doc_id], mode="lift")
    lift.documents(); lift.forget(doc.doc_id)

It composes the parts: training (``lift_tool.training``), answering (``lift_tool.answering``), background
absorption (``lift_tool.jobs``), and the memory (``lift_tool.memory``). Absorption stores nothing until training
has succeeded, so an interrupted or failed absorption leaves the memory's documents and adapters exactly as they
were; its last checkpoint stays in the memory's ``unfinished/`` folder, and absorbing the document again goes on
from it.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from lift_tool.answering import Answer, Answering, Mode
from lift_tool.config import Settings, load_settings
from lift_tool.documents import DOCUMENT_SUFFIXES, Document, confine, make_document, read_document
from lift_tool.errors import AbsorptionInterrupted, ConfigError, InputError, LiftError, StorageError
from lift_tool.jobs import AbsorptionJob, AbsorptionStatus, BackgroundJobs
from lift_tool.portable import hub_name, make_portable

if TYPE_CHECKING:
    from lift_tool.cluster import Cluster
    from lift_tool.memory.pool import AdapterPool
    from lift_tool.memory.registry import AdapterEntry, DocumentEntry, Registry, VerifyReport
    from lift_tool.memory.retrieval import RetrievalStore

    from lift_tool.models import LoadedModel
    from lift_tool.served import ServedModels
    from lift_tool.training.loop import StepReport


class ModelHost:
    """An answering model with its lock and adapter pool, shared by the Lifts that answer with it."""

    def __init__(self, model: "LoadedModel | None" = None):
        self.loaded = model  # loaded on first use by a Lift on this host
        self.pool: "AdapterPool | None" = None
        self.lock = threading.RLock()


@dataclass
class AbsorbResult:
    """What :meth:`Lift.absorb` stored: the document, its adapter, and whether it was absorbed before."""

    document: "DocumentEntry"
    adapter: "AdapterEntry"
    cached: bool  # True when the same text, model and settings had been absorbed before
    seconds: float


MIN_ABSORB_TOKENS = 8  # a shorter text gives nothing to train on (and fits any prompt as it is)


def _too_short(title: str, why: str) -> str:
    return (f"{title!r} is too short to absorb into an adapter ({why}): a text this short is best given whole in "
            "the prompt (the router and the lift_absorb tool route it to context); absorb a longer document")


def _names_a_file(text: str) -> bool:
    """Whether a string is meant as a path: an existing file, or one line ending in a document suffix."""
    if "\n" in text or len(text) >= 4096:
        return False
    path = Path(text).expanduser()
    try:
        exists = path.is_file()
    except OSError:  # a name the filesystem cannot hold (over 255 bytes, say) is text, not a path
        return False
    return exists or (" " not in path.name and path.suffix.lower() in DOCUMENT_SUFFIXES)


class Lift:
    """A memory of long documents on one answering model: absorb, index, ask, chat, list, forget, move.

    ``settings``: where the memory lives and which model answers (default: from the environment, ``LIFT_*``).
    ``model``: an already loaded model to use instead of loading the configured one on first use.
    ``host``: the model of another Lift (its ``host``), to share instead of loading one more copy: Lifts on
    different memories, same model (:func:`shared_lift` does this).
    One generation or training runs at a time on the shared model (``lock``).
    """

    def __init__(self, settings: Settings | None = None, model: "LoadedModel | None" = None,
                 host: "ModelHost | None" = None):
        from lift_tool.memory.registry import Registry

        self.settings = settings or load_settings()
        self.registry: Registry = Registry(self.settings.home)
        self.host = host or ModelHost(model)
        self._store: RetrievalStore | None = None
        self._served: "ServedModels | None" = None
        self._cluster: "Cluster | None" = None
        self._parts_lock = threading.Lock()
        # One model, one generation or training at a time (shared by every Lift on the host).
        self.lock = self.host.lock
        self.answering = Answering(self)
        self.jobs = BackgroundJobs(self.settings.home)  # absorptions started here in the background

    # ------------------------------------------------------------------------------------- lazy parts

    # The model and its adapter pool live on the host, shared by the Lifts on it.
    @property
    def loaded(self) -> "LoadedModel":
        with self.lock:
            if self.host.loaded is None:
                from lift_tool.models import load_model

                self.host.loaded = load_model(settings=self.settings)
            return self.host.loaded

    @property
    def pool(self) -> "AdapterPool":
        with self.lock:
            if self.host.pool is None:
                from lift_tool.memory.pool import AdapterPool

                loaded = self.loaded
                self.host.pool = AdapterPool(loaded.model, loaded.fingerprint, self.registry, self.settings.pool_capacity)
            return self.host.pool

    @property
    def generator(self) -> "AdapterPool | ServedModels":
        """What generates answers: the adapter pool on the model in this process, or the vLLM server at
        ``LIFT_SERVER__URL`` with the adapters served there (lift_tool.served). Both give ``base()`` and
        ``activate(adapter)``."""
        url = self.settings.server.url
        if url is None:
            return self.pool
        if self._served is None or self._served.server.url != url.rstrip("/"):
            from lift_tool.served import ServedModels, VllmServer

            self._served = ServedModels(VllmServer(url, hub_name(self.settings.model, self.loaded.path)))
        return self._served

    @property
    def cluster(self) -> "Cluster | None":
        """The Ray cluster that absorbs documents (``LIFT_CLUSTER__ADDRESS``), or None to absorb in this process."""
        settings = self.settings.cluster
        if settings.address is None:
            return None
        with self._parts_lock:
            if self._cluster is None or self._cluster.address != settings.address:
                from lift_tool.cluster import Cluster

                self._cluster = Cluster(settings.address, settings.max_retries, settings.cpus_per_job,
                                        settings.gpus_per_job)
            return self._cluster

    @property
    def store(self) -> "RetrievalStore":
        with self._parts_lock:  # one store object: threads absorbing at once (absorb_many) share it
            if self._store is None:
                from lift_tool.memory.retrieval import RetrievalStore

                retrieval, chroma = self.settings.retrieval, self.settings.chroma
                folder = self.settings.home / "chroma" if chroma.url is None else None
                self._store = RetrievalStore(folder, chunk_tokens=retrieval.chunk_tokens,
                                             chunk_overlap=retrieval.chunk_overlap, url=chroma.url,
                                             collection=chroma.collection)
            return self._store

    @property
    def context_window(self) -> int:
        return self.settings.context_window or self.loaded.context_window

    # ---------------------------------------------------------------------------------------- documents

    def read(self, source: "str | Path | Document", title: str | None = None, confined: bool = False) -> Document:
        """A document from a file path, a ``Document``, or text (a string that is not an existing file).

        ``confined``: the path came from an agent (a tool call, a graph's input): it must lie in one of the
        folders of ``settings.allowed_roots`` once links are followed, else it is refused (:func:`confine`).
        """
        if isinstance(source, Document):
            return source
        if isinstance(source, Path) or (isinstance(source, str) and _names_a_file(source)):
            if confined:
                source = confine(source, self.settings.allowed_roots)
            # a missing file is an error, not a one-line document
            return read_document(source, title=title, max_bytes=self.settings.max_document_bytes)
        if isinstance(source, str):
            return make_document(source, title=title)
        raise InputError(f"cannot read a document from a {type(source).__name__}: give a path or a string")

    def count_tokens(self, text: str) -> int:
        tokens = len(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
        if tokens > self.settings.max_document_tokens:
            raise InputError(
                f"the document has {tokens:,} tokens, over the limit of {self.settings.max_document_tokens:,} "
                "(raise LIFT_MAX_DOCUMENT_TOKENS to allow it)"
            )
        return tokens

    def index(self, source, title: str | None = None, route: str = "retrieve") -> "DocumentEntry":
        """Register a document without training: stored, and indexed for retrieval."""
        document = self.read(source, title)
        tokens = self.count_tokens(document.text)
        # The row first: a process killed in between leaves a document without chunks, which verify finds and
        # repair indexes, never chunks of a document the registry does not know.
        entry = self.registry.add_document(document.doc_id, document.title, document.text, tokens, route=route)
        self._index_for_retrieval(document.doc_id, document.title, document.text)
        return entry

    def _index_for_retrieval(self, doc_id: str, title: str, text: str) -> None:
        """Index a stored document's text in the retrieval store. When the store cannot be written (a full disk),
        the document stays stored, and the error says so and how to index it later."""
        try:
            self.store.add_document(doc_id, title, text)
        except StorageError as err:
            raise StorageError(f"{title!r} is stored, but not indexed for retrieval: {err}; `lift verify --repair` "
                               "indexes it") from err

    def absorb(
        self,
        source,
        title: str | None = None,
        budget_seconds: float | None = None,
        progress: bool = True,
        on_step: "Callable[[StepReport], None] | None" = None,
        qa_generator=None,
        force: bool = False,
        model: "LoadedModel | None" = None,
        stop: "threading.Event | None" = None,
    ) -> AbsorbResult:
        """LIFT: train an adapter on the document, store it, and index the text for retrieval.

        The same text absorbed again with the same base model and settings is a cache hit (``force`` retrains). A
        second process absorbing the same document meanwhile waits for the first and then reuses its adapter.
        ``model``: train this private copy of the base model (see :meth:`model_copy`) instead of the shared one,
        without holding the model lock, so that questions are answered meanwhile (background absorption).
        With ``LIFT_CLUSTER__ADDRESS`` set, the training runs as a job on the Ray cluster (lift_tool.cluster) and its
        adapter is committed here; setting ``stop`` cancels that job (``on_step`` is not called there).
        """
        from lift_tool.training.absorb import absorb

        started = time.monotonic()
        document = self.read(source, title)
        settings = self.settings
        if budget_seconds is not None:
            if budget_seconds <= 0:
                raise ConfigError("the time budget must be a positive number of seconds")
            training = settings.training.model_copy(update={"budget_seconds": budget_seconds})
            settings = settings.model_copy(update={"training": training})
        cluster = self.cluster if model is None else None  # trained on a worker: nothing to lock here
        shared = model is None and cluster is None  # the shared model: hold the lock, take the pool's layers off it
        with self.lock if shared else contextlib.nullcontext(), contextlib.ExitStack() as absorbing:
            loaded = model or self.loaded  # (on a cluster, for its tokenizer and fingerprint)
            tokens = self.count_tokens(document.text)
            if tokens < MIN_ABSORB_TOKENS:
                raise InputError(_too_short(document.title, f"it has {tokens} token{'s' * (tokens != 1)}"))
            cached = None if force else self.registry.find_adapter(
                document.doc_id, loaded.fingerprint, settings.training_fingerprint())
            if cached is None:  # one absorption of a document at a time: wait for another process absorbing it
                absorbing.enter_context(self.registry.absorbing(document.doc_id))
                cached = None if force else self.registry.find_adapter(
                    document.doc_id, loaded.fingerprint, settings.training_fingerprint())
            if cached is None:
                if shared:
                    self.answering.prefix_cache.clear()
                if shared and self.host.pool is not None:
                    self.host.pool.release()  # training needs the bare model
                unfinished = self.registry.unfinished_path(document.doc_id)
                with self.registry.staging() as staged:
                    if cluster is not None:  # (on_step is not called: the steps run on the worker)
                        if qa_generator is not None:
                            raise ConfigError("a question generator runs in this process: absorb here (unset "
                                              "LIFT_CLUSTER__ADDRESS) to use one")
                        manifest = cluster.train(document, settings, staged, stop)
                    else:  # saving checkpoints beside the registry: absorbing it again resumes an interrupted run
                        manifest = absorb(document, loaded, settings, staged, qa_generator=qa_generator,
                                          progress=progress, on_step=on_step, checkpoint_dir=unfinished)
                    if manifest.steps == 0:  # an untrained adapter would answer confident nonsense: store nothing
                        raise InputError(_too_short(document.title, "no training example could be made from it"))
                    make_portable(staged, manifest, hub_name(self.settings.model, loaded.path))
                    entry = self.registry.add_adapter(staged, text=document.text)
                    shutil.rmtree(unfinished, ignore_errors=True)  # its checkpoint: finished now
                if shared and self.host.pool is not None:
                    self.host.pool.model = loaded.model
            else:
                entry = cached
            doc_entry = self.registry.add_document(document.doc_id, document.title, document.text, tokens, route="absorb")
        self._index_for_retrieval(document.doc_id, document.title, document.text)
        return AbsorbResult(doc_entry, entry, cached=cached is not None, seconds=time.monotonic() - started)

    def absorb_many(self, sources: list, budget_seconds: float | None = None,
                    on_done: "Callable[[object, AbsorbResult | LiftError], None] | None" = None,
                    ) -> "list[AbsorbResult | LiftError]":
        """Absorb several documents: in parallel as jobs on the Ray cluster where one is configured, else one after
        the other here. A document that fails is indexed for retrieval and its error returned in its place (the
        others go on); ``on_done(source, result or error)`` is called as each ends. Ctrl-C cancels what is still
        running (AbsorptionInterrupted); what had ended stays stored."""
        def one(source) -> "AbsorbResult | LiftError":
            try:
                result: AbsorbResult | LiftError = self.absorb(source, budget_seconds=budget_seconds, progress=False,
                                                               stop=stop)
            except AbsorptionInterrupted:
                raise
            except LiftError as err:
                result = err
                try:  # kept for retrieval, as a background absorption that failed is
                    document = self.read(source)
                    known = self.registry.get_document(document.doc_id)
                    self.index(document, route=None if known else "retrieve")  # None keeps an existing route
                except LiftError:
                    pass  # unreadable: the error above says why
            if on_done is not None:
                on_done(source, result)
            return result

        stop = threading.Event()
        if self.cluster is None:
            return [one(source) for source in sources]
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=max(1, min(len(sources), 64)), thread_name_prefix="lift-cluster")
        try:
            futures = [pool.submit(one, source) for source in sources]
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            stop.set()
            self.cluster.cancel_all()
            raise AbsorptionInterrupted("absorption interrupted: the documents still running were cancelled, those "
                                        "that had ended are stored") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def documents(self) -> list["DocumentEntry"]:
        return self.registry.list_documents()

    def resolve(self, ref: str) -> "DocumentEntry":
        return self.registry.resolve(ref)

    def forget(self, ref: str) -> "DocumentEntry":
        """Remove a document: its adapters, its text and its retrieval chunks. A background absorption of it is
        cancelled first, so that it cannot store the document again when it ends."""
        entry = self.registry.resolve(ref)
        self.jobs.stop(entry.doc_id)  # outside self.lock: the job needs that lock to finish
        with self.lock:
            entry = self.registry.resolve(entry.doc_id)
            if self.host.pool is not None:
                for adapter in entry.adapters:
                    self.host.pool.evict(adapter.key)
            removed = self.registry.remove(entry.doc_id)
        try:
            self.store.remove_document(removed.doc_id)
        except StorageError as err:
            raise StorageError(f"{removed.title!r} is forgotten, but its retrieval chunks are not removed yet: {err}; "
                               "`lift verify --repair` removes them") from err
        self.jobs.remove_status(removed.doc_id)
        return removed

    def choose_documents(self, question: str) -> list["DocumentEntry"]:
        """The stored documents a question is about, best first (none when nothing scores above threshold)."""
        matches = self.store.choose_documents(question, threshold=self.settings.retrieval.document_threshold)
        entries = []
        for match in matches:
            entry = self.registry.get_document(match.doc_id)
            if entry is not None:
                entries.append(entry)
        return entries

    # ------------------------------------------------------------------------------ care and transport

    def verify(self, repair: bool = False, prune: bool = False) -> "VerifyReport":
        """Check every adapter against its checksums, the index against the folders, and the retrieval store
        against the index. ``repair`` rebuilds what the folders explain, indexes documents that have no chunks,
        removes the chunks of documents the index no longer knows and what is damaged; ``prune`` also removes what
        it cannot explain."""
        from lift_tool.memory.registry import SHORT_ID

        report = self.registry.verify(repair=repair, prune=prune)
        known = {entry.doc_id: entry for entry in self.registry.list_documents()}
        indexed = set(self.store.document_ids())
        report.unindexed = sorted(doc_id for doc_id in known.keys() - indexed if doc_id not in report.missing_texts)
        report.stale_chunks = sorted(indexed - known.keys())
        if repair:
            for doc_id in report.stale_chunks:  # a forget that ended before the store: finish it
                self.store.remove_document(doc_id)
                report.repaired.append(f"removed the retrieval chunks of document {doc_id[:SHORT_ID]}, which is forgotten")
            for doc_id in report.unindexed:
                entry = known[doc_id]
                self._index_for_retrieval(doc_id, entry.title, self.registry.document_text(doc_id))
                report.repaired.append(f"indexed document {entry.short_id} ({entry.title}) for retrieval again")
        return report

    def export(self, ref: str, file: "Path | str") -> Path:
        """Write one document's memory (text, adapters, manifests) to a tar.gz archive; its path."""
        return self.registry.export(ref, file)

    def export_peft(self, ref: str, folder: "Path | str", force: bool = False) -> Path:
        """Write the adapter of document ``ref`` for the model in use (the newest of its adapters, when it has
        none for this model) as a plain PEFT folder, with a model card, that loads without lift-tool."""
        from lift_tool.memory.registry import WEIGHTS_FILE
        from lift_tool.portable import export_peft

        document = self.registry.resolve(ref)
        if not document.adapters:
            raise InputError(f"{document.title!r} has no adapter (it is kept for {document.route}): nothing to export "
                             "as PEFT; `lift export` moves its memory as an archive")
        fingerprint = self.host.loaded.fingerprint if self.host.loaded is not None else None
        mine = [adapter for adapter in document.adapters if adapter.base_fingerprint == fingerprint]
        entry = max(mine or document.adapters, key=lambda adapter: adapter.created)
        return export_peft(entry, self.registry.read_intact(entry, WEIGHTS_FILE), Path(folder), force=force)

    def import_archive(self, file: "Path | str") -> "DocumentEntry":
        """Add a document's memory from an archive written by :meth:`export`, and index it for retrieval."""
        entry = self.registry.import_archive(file, self.settings.archive_max_bytes, self.settings.archive_max_files)
        self._index_for_retrieval(entry.doc_id, entry.title, self.registry.document_text(entry.doc_id))
        return entry

    # ------------------------------------------------------------------------------ background absorption

    def model_copy(self) -> "LoadedModel":
        """A private copy of the base model, for training while the shared one keeps answering.

        Loaded again from its folder where it has one (a second or so for the default model), else copied in
        memory. Costs one more copy of the base weights for as long as it is kept.
        """
        import copy

        from lift_tool.models import load_model, wrap_model

        loaded = self.loaded
        if loaded.path is not None:
            fresh = load_model(settings=self.settings)
            if fresh.fingerprint == loaded.fingerprint:
                return fresh
        with self.lock:
            if self.host.pool is not None:
                self.host.pool.release()  # copy the bare model, not the pool's LoRA layers
                self.host.pool.model = loaded.model
            model = copy.deepcopy(loaded.model)
        return wrap_model(model, copy.deepcopy(loaded.tokenizer), loaded.name, loaded.fingerprint, loaded.path)

    def absorb_in_background(
        self,
        source,
        title: str | None = None,
        budget_seconds: float | None = None,
        qa_generator=None,
    ) -> AbsorptionJob:
        """Index the document for retrieval now and absorb it in a background thread; returns at once.

        The document is listed with route "retrieve" until its adapter is stored, then "absorb". Training uses a
        private copy of the model (:meth:`model_copy`), so questions are answered meanwhile (from retrieval or
        the document in context). If absorption fails or is cancelled, the document stays retrieval-only and
        :meth:`absorption_status` says why; a process that dies meanwhile leaves a status read as "interrupted".
        """
        document = self.read(source, title)

        def index() -> None:
            known = self.registry.get_document(document.doc_id)
            self.index(document, route=None if known else "retrieve")  # None keeps an existing route

        def absorb(on_step: "Callable[[StepReport], None]", cancelled: threading.Event) -> AbsorbResult:
            if self.cluster is not None:  # a job on the cluster: no model copy here
                return self.absorb(document, budget_seconds=budget_seconds, progress=False, stop=cancelled)
            private = self.model_copy()
            return self.absorb(document, budget_seconds=budget_seconds, progress=False, qa_generator=qa_generator,
                               on_step=on_step, model=private)

        return self.jobs.start(document.doc_id, document.title, index, absorb)

    def absorption_status(self, ref: str) -> AbsorptionStatus:
        """Where a document's absorption stands: "absorbed", "running", "failed", "cancelled", "interrupted"
        (the process absorbing it ended first) or "not absorbed" (retrieval or context only)."""
        return self.jobs.status(self.registry.resolve(ref))

    # -------------------------------------------------------------------------------------------- asking

    def ask(
        self,
        question: str,
        documents: "list[str] | str | None" = None,
        mode: Mode = "auto",
        max_new_tokens: int | None = None,
        on_text: Callable[[str], None] | None = None,
        context: str | None = None,
    ) -> Answer:
        """Answer ``question`` from memory. ``documents``: ids, id prefixes or titles; None chooses by retrieval.

        Modes: ``base`` (no memory), ``lift`` (adapter, no document in the prompt), ``rag`` (retrieved chunks),
        ``lift+rag`` (both), ``context`` (the document itself, cut to the model's window: its middle left out),
        ``lift+context`` (the adapter and the document cut to the window, as the LIFT paper evaluates it),
        ``auto`` (``lift+rag`` where the documents have adapters, else ``context`` if they fit the window, else
        ``rag``).
        ``lift+rag`` answers from the chunks without the adapter (``mode`` "rag" in the answer) when the adapter is
        unsure of its answer (``settings.retrieval.adapter_min_probability``) or says the document does not tell.
        ``context``: your own text for the prompt, with ``base`` or ``lift`` (e.g. the adapter plus a passage).
        """
        return self.answering.ask(question, documents, mode, max_new_tokens, on_text, context)

    def chat(
        self,
        conversation: list[dict[str, str]],
        documents: "list[str] | str | None" = None,
        mode: Mode = "auto",
        max_new_tokens: int | None = None,
        on_text: Callable[[str], None] | None = None,
        stop: list[str] | None = None,
        temperature: float | None = None,
    ) -> Answer:
        """Answer the last user message of ``conversation`` (``{"role", "content"}`` dicts) from memory, with the
        earlier turns in the prompt (``LiftChatModel`` and the doc_qa graph use it).

        Like :meth:`ask`, except that: the base model answers when no document is named and none is about the
        question (a conversation may be about anything); a system message in the conversation replaces the one
        that names the documents; the oldest turns are left out when the conversation would overflow the window.
        ``stop``: strings that end the reply (generation stops there); ``temperature`` > 0 samples.
        """
        return self.answering.chat(conversation, documents, mode, max_new_tokens, on_text, stop, temperature)


# ---------------------------------------------------------------------------------------- shared Lift

# What decides the loaded model; the other settings (the memory's folder, training, retrieval) share it.
MODEL_FIELDS = ("model", "device", "dtype", "cache_dir", "pool_capacity")

_SHARED: "OrderedDict[str, Lift]" = OrderedDict()  # least recently used first
_HOSTS: "weakref.WeakValueDictionary[str, ModelHost]" = weakref.WeakValueDictionary()  # alive while a Lift uses it
_SHARED_LOCK = threading.Lock()


def shared_lift(settings: Settings | None = None) -> Lift:
    """One :class:`Lift` per settings in this process, so that tools and graph nodes share the loaded model.

    Lifts whose settings differ only in what does not change the model (their memory folders, say) share one
    loaded model (:class:`ModelHost`). At most ``settings.shared_lifts`` Lifts are kept (``LIFT_SHARED_LIFTS``),
    the least recently used dropped first; a model is freed when no Lift kept uses it.
    """
    settings = settings or load_settings()
    key = settings.model_dump_json()
    with _SHARED_LOCK:
        lift = _SHARED.get(key)
        if lift is None:
            model_key = settings.model_dump_json(include=set(MODEL_FIELDS))
            host = _HOSTS.get(model_key)
            if host is None:
                host = _HOSTS[model_key] = ModelHost()
            lift = _SHARED[key] = Lift(settings, host=host)
        _SHARED.move_to_end(key)
        while len(_SHARED) > settings.shared_lifts:
            _SHARED.popitem(last=False)
        return lift


__all__ = ["Lift", "AbsorbResult", "ModelHost", "shared_lift"]
