"""``Lift``: the one object the CLI, the LangChain tool and the graphs use.

It owns the settings, the answering model (loaded on first use), the adapter registry, the adapter pool on the
model, and the retrieval store, and offers what a user does with a memory of documents:

    lift = Lift()
    doc = lift.absorb("report.pdf")            # LIFT: train an adapter, index the text
    lift.ask("When was it founded?", [doc.doc_id], mode="lift")
    lift.documents(); lift.forget(doc.doc_id)

Absorption writes nothing until training has succeeded, so an interrupted or failed absorption leaves the
memory exactly as it was.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

from lift_tool.answer import PrefixCache, Reply
from lift_tool.config import Settings, load_settings
from lift_tool.documents import DOCUMENT_SUFFIXES, Document, make_document, read_document
from lift_tool.errors import AbsorptionInterrupted, ConfigError, InputError, LiftError, UnknownDocumentError
from lift_tool.prompts import NOT_IN_DOCUMENT, is_abstention

if TYPE_CHECKING:
    from lift_tool.memory.pool import AdapterPool
    from lift_tool.memory.registry import AdapterEntry, DocumentEntry, Registry
    from lift_tool.memory.retrieval import RetrievalStore, RetrievedChunk

    from lift_tool.absorb import StepReport
    from lift_tool.models import LoadedModel

Mode = Literal["auto", "base", "lift", "rag", "lift+rag", "context"]
MODES = ("auto", "base", "lift", "rag", "lift+rag", "context")
ADAPTER_MODES = {"lift", "lift+rag"}
NOTHING_MATCHES = "None of the stored documents seems to be about this question."


@dataclass
class AbsorbResult:
    document: "DocumentEntry"
    adapter: "AdapterEntry"
    cached: bool  # True when the same text, model and settings had been absorbed before
    seconds: float


@dataclass
class Answer:
    text: str
    mode: str  # the mode actually used ("none" when no document matched)
    documents: list[tuple[str, str]] = field(default_factory=list)  # (doc_id, title)
    chunks: list["RetrievedChunk"] = field(default_factory=list)  # the retrieved context, for citations
    seconds: float = 0.0
    least_token_probability: float = 1.0  # how sure the model was of the least sure token of ``text``


def keeps_adapter_answer(reply: Reply, min_probability: float) -> bool:
    """Whether lift+rag keeps the adapter's answer rather than read the passages without it: the model gave every
    token at least ``min_probability``, and the answer is not that the document does not tell. An adapter says
    so, sure of it, about details its training questions missed; the retrieved passages may hold them."""
    return reply.least_token_probability >= min_probability and not is_abstention(reply.text)


def _names_a_file(text: str) -> bool:
    """Whether a string is meant as a path: an existing file, or one line ending in a document suffix."""
    if "\n" in text or len(text) >= 4096:
        return False
    path = Path(text).expanduser()
    return path.is_file() or (" " not in path.name and path.suffix.lower() in DOCUMENT_SUFFIXES)


class Lift:
    def __init__(self, settings: Settings | None = None, model: "LoadedModel | None" = None):
        from lift_tool.memory.registry import Registry

        self.settings = settings or load_settings()
        self.registry: Registry = Registry(self.settings.home)
        self._loaded = model
        self._pool: AdapterPool | None = None
        self._store: RetrievalStore | None = None
        # One model, one generation or training at a time.
        self._lock = threading.RLock()
        self._prefix_cache = PrefixCache()  # the last long prompt prefix read, for the next question about it
        self._jobs: dict[str, AbsorptionJob] = {}  # background absorptions started here, by doc_id
        self._jobs_lock = threading.Lock()

    # ------------------------------------------------------------------------------------- lazy parts

    @property
    def loaded(self) -> "LoadedModel":
        with self._lock:
            if self._loaded is None:
                from lift_tool.models import load_model

                self._loaded = load_model(settings=self.settings)
            return self._loaded

    @property
    def pool(self) -> "AdapterPool":
        with self._lock:
            if self._pool is None:
                from lift_tool.memory.pool import AdapterPool

                loaded = self.loaded
                self._pool = AdapterPool(loaded.model, loaded.fingerprint, self.registry, self.settings.pool_capacity)
            return self._pool

    @property
    def store(self) -> "RetrievalStore":
        if self._store is None:
            from lift_tool.memory.retrieval import RetrievalStore

            retrieval = self.settings.retrieval
            self._store = RetrievalStore(self.settings.home / "chroma", chunk_tokens=retrieval.chunk_tokens,
                                         chunk_overlap=retrieval.chunk_overlap)
        return self._store

    @property
    def context_window(self) -> int:
        return self.settings.context_window or self.loaded.context_window

    # ---------------------------------------------------------------------------------------- documents

    def read(self, source: "str | Path | Document", title: str | None = None) -> Document:
        """A document from a file path, a ``Document``, or text (a string that is not an existing file)."""
        if isinstance(source, Document):
            return source
        if isinstance(source, Path) or (isinstance(source, str) and _names_a_file(source)):
            return read_document(source, title=title)  # a missing file is an error, not a one-line document
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
        self.store.add_document(document.doc_id, document.title, document.text)
        return self.registry.add_document(document.doc_id, document.title, document.text, tokens, route=route)

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
    ) -> AbsorbResult:
        """LIFT: train an adapter on the document, store it, and index the text for retrieval.

        The same text absorbed again with the same base model and settings is a cache hit (``force`` retrains).
        ``model``: train this private copy of the base model (see :meth:`model_copy`) instead of the shared one,
        without holding the model lock, so that questions are answered meanwhile (background absorption).
        """
        from lift_tool.absorb import absorb

        started = time.monotonic()
        document = self.read(source, title)
        settings = self.settings
        if budget_seconds is not None:
            if budget_seconds <= 0:
                raise ConfigError("the time budget must be a positive number of seconds")
            training = settings.training.model_copy(update={"budget_seconds": budget_seconds})
            settings = settings.model_copy(update={"training": training})
        shared = model is None  # training the shared model: hold the lock, and take the pool's layers off it
        with self._lock if shared else contextlib.nullcontext():
            loaded = self.loaded if shared else model
            tokens = self.count_tokens(document.text)
            cached = None if force else self.registry.find_adapter(
                document.doc_id, loaded.fingerprint, settings.training_fingerprint())
            if cached is None:
                if shared:
                    self._prefix_cache.clear()
                if shared and self._pool is not None:
                    self._pool.release()  # training needs the bare model
                with self.registry.staging() as staged:
                    absorb(document, loaded, settings, staged, qa_generator=qa_generator, progress=progress, on_step=on_step)
                    entry = self.registry.add_adapter(staged, text=document.text)
                if shared and self._pool is not None:
                    self._pool.model = loaded.model
            else:
                entry = cached
            doc_entry = self.registry.add_document(document.doc_id, document.title, document.text, tokens, route="absorb")
        self.store.add_document(document.doc_id, document.title, document.text)
        return AbsorbResult(doc_entry, entry, cached=cached is not None, seconds=time.monotonic() - started)

    def documents(self) -> list["DocumentEntry"]:
        return self.registry.list_documents()

    def resolve(self, ref: str) -> "DocumentEntry":
        return self.registry.resolve(ref)

    def forget(self, ref: str) -> "DocumentEntry":
        """Remove a document: its adapters, its text and its retrieval chunks. A background absorption of it is
        cancelled first, so that it cannot store the document again when it ends."""
        entry = self.registry.resolve(ref)
        with self._jobs_lock:
            job = self._jobs.pop(entry.doc_id, None)
        if job is not None and job.running:
            job.cancel()
            job.wait()  # outside self._lock: the job needs that lock to finish
        with self._lock:
            entry = self.registry.resolve(entry.doc_id)
            if self._pool is not None:
                for adapter in entry.adapters:
                    self._pool.evict(adapter.key)
            removed = self.registry.remove(entry.doc_id)
        self.store.remove_document(removed.doc_id)
        (Path(self.settings.home) / JOBS_DIR / f"{removed.doc_id}.json").unlink(missing_ok=True)  # its absorption status
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
        with self._lock:
            if self._pool is not None:
                self._pool.release()  # copy the bare model, not the pool's LoRA layers
                self._pool.model = loaded.model
            model = copy.deepcopy(loaded.model)
        return wrap_model(model, copy.deepcopy(loaded.tokenizer), loaded.name, loaded.fingerprint, loaded.path)

    def absorb_in_background(
        self,
        source,
        title: str | None = None,
        budget_seconds: float | None = None,
        qa_generator=None,
    ) -> "AbsorptionJob":
        """Index the document for retrieval now and absorb it in a background thread; returns at once.

        The document is listed with route "retrieve" until its adapter is stored, then "absorb". Training uses a
        private copy of the model (:meth:`model_copy`), so questions are answered meanwhile (from retrieval or
        the document in context). If absorption fails or is cancelled, the document stays retrieval-only and
        :meth:`absorption_status` says why; a process that dies meanwhile leaves a status read as "interrupted".
        """
        document = self.read(source, title)
        with self._jobs_lock:
            running = self._jobs.get(document.doc_id)
            if running is not None and running.state == "running":
                return running
            known = self.registry.get_document(document.doc_id)
            self.index(document, route=None if known else "retrieve")  # None keeps an existing route
            job = AbsorptionJob(document.doc_id, document.title, home=self.settings.home)
            self._jobs[document.doc_id] = job
        job._write_status()

        def stop_when_cancelled(report: "StepReport") -> None:
            if job._cancel.is_set():
                raise AbsorptionInterrupted("absorption was cancelled before it finished: nothing was stored")

        def run() -> None:
            try:
                private = self.model_copy()
                job.result = self.absorb(document, budget_seconds=budget_seconds, progress=False, qa_generator=qa_generator,
                                         on_step=stop_when_cancelled, model=private)
                job.state = "done"
            except BaseException as err:  # noqa: BLE001 - whatever it was, the document stays retrieval-only
                job.state = "cancelled" if isinstance(err, AbsorptionInterrupted) else "failed"
                job.error = str(err) if isinstance(err, LiftError) else f"{type(err).__name__}: {err}"
                _log.warning("background absorption of %r %s: %s", document.title, job.state, job.error)
            finally:
                job._write_status()

        job._thread = threading.Thread(target=run, name=f"lift-absorb-{document.doc_id[:12]}", daemon=True)
        job._thread.start()
        _RUNNING_JOBS.add(job)
        return job

    def absorption_status(self, ref: str) -> "AbsorptionStatus":
        """Where a document's absorption stands: "absorbed", "running", "failed", "cancelled", "interrupted"
        (the process absorbing it ended first) or "not absorbed" (retrieval or context only)."""
        entry = self.registry.resolve(ref)
        home = Path(self.settings.home)
        job = self._jobs.get(entry.doc_id) or next(
            (j for j in list(_RUNNING_JOBS) if j.doc_id == entry.doc_id and j.home == home), None)
        record = job.status_record() if job is not None else _read_status(home, entry.doc_id)
        running = record is not None and record["state"] == "running"
        if record is None or record["state"] == "done" or (entry.adapters and not running):
            state = "absorbed" if entry.adapters else "not absorbed"  # (absorbed since, if an attempt failed)
            return AbsorptionStatus(entry.doc_id, entry.title, state, None, entry.route)
        if running:
            alive = job.running if job is not None else (record.get("pid") != os.getpid() and _process_alive(record.get("pid")))
            if not alive:
                record = {**record, "state": "interrupted",
                          "error": "the process absorbing it ended before it finished: absorb the document again"}
        return AbsorptionStatus(entry.doc_id, entry.title, record["state"], record.get("error"), entry.route)

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
        ``lift+rag`` (both), ``context`` (the document itself, cut to the model's window), ``auto`` (``lift+rag``
        where the documents have adapters, else ``context`` if they fit the window, else ``rag``).
        ``lift+rag`` answers from the chunks without the adapter (``mode`` "rag" in the answer) when the adapter is
        unsure of its answer (``settings.retrieval.adapter_min_probability``) or says the document does not tell.
        ``context``: your own text for the prompt, with ``base`` or ``lift`` (e.g. the adapter plus a passage).
        """
        from lift_tool.answer import context_budget, fit_context, generate_reply
        from lift_tool.prompts import messages

        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if context is not None and mode not in {"base", "lift", "auto"}:
            raise ConfigError(f"a given context goes with mode base or lift, not {mode!r}")
        question = question.strip()
        if not question:
            raise InputError("the question is empty")
        started = time.monotonic()
        if isinstance(documents, str):
            documents = [documents]
        entries = [self.registry.resolve(ref) for ref in documents] if documents else self.choose_documents(question)
        if not entries and mode != "base":
            return Answer(NOTHING_MATCHES, "none", seconds=time.monotonic() - started)

        with self._lock:
            loaded = self.loaded
            if mode == "auto":
                mode = self._auto_mode(entries)
                if context is not None:
                    mode = "lift" if mode == "lift+rag" else "base"
            titles = [entry.title for entry in entries]
            max_new_tokens = max_new_tokens or self.settings.max_new_tokens
            budget = context_budget(loaded.tokenizer, self.context_window, question, titles, max_new_tokens)

            chunks: list = []
            if context is not None:
                context = fit_context(loaded.tokenizer, context, budget)
            elif mode in {"rag", "lift+rag"}:
                chunks = self._retrieve(question, entries)
                context = fit_context(loaded.tokenizer, "\n\n".join(chunk.text for chunk in chunks), budget)
            elif mode == "context":
                texts = [self.registry.document_text(entry.doc_id) for entry in entries]
                joined = texts[0] if len(texts) == 1 else "\n\n".join(f"# {t}\n{x}" for t, x in zip(titles, texts))
                context = fit_context(loaded.tokenizer, joined, budget)

            def generate(model, for_titles: list[str], stream, state: str, give_up_below: float = 0.0) -> Reply:
                cache = self._prefix_cache if for_titles == titles else None  # not for one document of several
                return generate_reply(model, loaded.tokenizer, messages(question, for_titles, context), max_new_tokens,
                                      stream, prefix_cache=cache, state=state, give_up_below=give_up_below)

            reply, mode = self._reply(mode, entries, titles, generate, on_text)
        return Answer(reply.text, mode, [(e.doc_id, e.title) for e in entries], chunks, time.monotonic() - started,
                      reply.least_token_probability)

    def chat(
        self,
        conversation: list[dict[str, str]],
        documents: "list[str] | str | None" = None,
        mode: Mode = "auto",
        max_new_tokens: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer the last user message of ``conversation`` (``{"role", "content"}`` dicts) from memory, with the
        earlier turns in the prompt (``LiftChatModel`` and the doc_qa graph use it).

        Like :meth:`ask`, except that: the base model answers when no document is named and none is about the
        question (a conversation may be about anything); a system message in the conversation replaces the one
        that names the documents; the oldest turns are left out when the conversation would overflow the window.
        """
        from lift_tool.answer import fit_context, generate_reply
        from lift_tool.prompts import render, system_prompt, user_prompt

        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        turns = [{"role": m["role"], "content": m["content"]} for m in conversation]
        if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
            raise InputError("the conversation must end with a user message that asks something")
        question = turns[-1]["content"].strip()
        started = time.monotonic()
        if isinstance(documents, str):
            documents = [documents]
        entries = [self.registry.resolve(ref) for ref in documents] if documents else self.choose_documents(question)
        if not entries:
            mode = "base"

        with self._lock:
            loaded = self.loaded
            tokenizer = loaded.tokenizer
            if mode == "auto":
                mode = self._auto_mode(entries)
            titles = [entry.title for entry in entries]
            max_new_tokens = max_new_tokens or self.settings.max_new_tokens
            own_system = turns[0]["role"] == "system"  # the caller's system message is kept as it is
            if not own_system:
                turns.insert(0, {"role": "system", "content": system_prompt(titles)})

            def prompt_tokens(with_passages: str | None) -> int:
                prompt = turns[:-1] + [{"role": "user", "content": user_prompt(question, with_passages)}]
                return len(tokenizer(render(tokenizer, prompt, True), add_special_tokens=False)["input_ids"])

            # Leave out the oldest turns (never the system message or the question) until the answer fits.
            while len(turns) > 2 and prompt_tokens(None) + max_new_tokens > self.context_window:
                del turns[1]
            budget = max(0, self.context_window - prompt_tokens("x") - max_new_tokens - 8)

            chunks: list = []
            passages: str | None = None  # what goes into the prompt before the question
            if mode in {"rag", "lift+rag"}:
                chunks = self._retrieve(question, entries)
                passages = fit_context(tokenizer, "\n\n".join(chunk.text for chunk in chunks), budget)
            elif mode == "context":
                texts = [self.registry.document_text(entry.doc_id) for entry in entries]
                joined = texts[0] if len(texts) == 1 else "\n\n".join(f"# {t}\n{x}" for t, x in zip(titles, texts))
                passages = fit_context(tokenizer, joined, budget)
            turns[-1] = {"role": "user", "content": user_prompt(question, passages)}

            def generate(model, for_titles: list[str], stream, state: str, give_up_below: float = 0.0) -> Reply:
                prompt = turns
                if for_titles != titles and not own_system:  # one document of several: name that one only
                    prompt = [{"role": "system", "content": system_prompt(for_titles)}] + turns[1:]
                return generate_reply(model, tokenizer, prompt, max_new_tokens, stream, give_up_below=give_up_below)

            reply, mode = self._reply(mode, entries, titles, generate, on_text)
        return Answer(reply.text, mode, [(e.doc_id, e.title) for e in entries], chunks, time.monotonic() - started,
                      reply.least_token_probability)

    def _retrieve(self, question: str, entries: list["DocumentEntry"]) -> list:
        retrieval = self.settings.retrieval
        return self.store.search(question, k=retrieval.k, doc_ids=[e.doc_id for e in entries], method=retrieval.search)

    def _auto_mode(self, entries: list["DocumentEntry"]) -> str:
        fingerprint = self.loaded.fingerprint
        if all(any(a.base_fingerprint == fingerprint for a in entry.adapters) for entry in entries):
            return "lift+rag"
        total = sum(entry.tokens for entry in entries)
        if total + 256 <= self.context_window:
            return "context"
        return "rag"

    def _reply(self, mode: str, entries, titles: list[str], generate, on_text) -> tuple[Reply, str]:
        """Answer in ``mode`` (resolved, not auto); the reply and the mode that gave it.

        ``generate(model, titles, on_text, state, give_up_below=0.0)`` writes a reply about the documents named in
        ``titles`` (the same prompt whichever documents it names); ``state`` names the adapters active on ``model``,
        for the prefix cache; ``give_up_below`` as in :func:`lift_tool.answer.generate_reply`.
        """
        if mode not in ADAPTER_MODES:
            with self.pool.base() as model:
                return generate(model, titles, on_text, "base"), mode
        loaded = self.loaded
        adapters = [self.registry.adapter_for(entry.doc_id, loaded.fingerprint, loaded.name) for entry in entries]
        if mode == "lift":
            return self._answer_with_adapters(adapters, titles, generate, on_text), mode
        # lift+rag: the adapter's answer is kept only if the model was sure of it; an adapter that has not learnt
        # the answer (a document absorbed under a short budget, say) is set aside, and the passages in the prompt
        # are read without it, as rag does (benchmarks/results/adapter_trust.md). So nothing streams until then,
        # and the adapter's answer stops at its first unsure token: the rest would be thrown away.
        min_probability = self.settings.retrieval.adapter_min_probability
        reply = self._answer_with_adapters(adapters, titles, generate, None, give_up_below=min_probability)
        if not keeps_adapter_answer(reply, min_probability):
            with self.pool.base() as model:
                reply, mode = generate(model, titles, None, "base"), "rag"
        if on_text:
            on_text(reply.text)
        return reply, mode

    def _answer_with_adapters(self, adapters, titles, generate, on_text, give_up_below: float = 0.0) -> Reply:
        """Answer with the documents' adapters (``generate`` and ``give_up_below`` as in :meth:`_reply`)."""
        state = "+".join(adapter.key for adapter in adapters)
        if len(adapters) == 1:
            with self.pool.activate(adapters[0]) as model:
                return generate(model, titles, on_text, state, give_up_below)
        if self.settings.multi_document == "combine":
            with self.pool.combine(adapters, how="cat") as model:
                return generate(model, titles, on_text, state, give_up_below)
        # per-document: each adapter answers about its own document; documents that say they do not know are
        # left out (benchmarks/results/multi_document.md: this beats combining the adapters). Each reply is
        # written out in full (no giving up): a reply cut short could no longer be told to be such a refusal.
        replies = []
        for adapter, title in zip(adapters, titles):
            with self.pool.activate(adapter) as model:
                replies.append((title, generate(model, [title], None, adapter.key)))
        parts = [(title, reply) for title, reply in replies if not is_abstention(reply.text)]
        if not parts:
            text = NOT_IN_DOCUMENT
        elif len(parts) == 1:
            text = parts[0][1].text
        else:
            text = "\n".join(f"{title}: {reply.text}" for title, reply in parts)
        if on_text:
            on_text(text)
        # As sure as the least sure of the replies it is made of.
        return Reply(text, min(reply.least_token_probability for _, reply in (parts or replies)))


# ------------------------------------------------------------------------------------ background jobs

_log = logging.getLogger("lift_tool")
JOBS_DIR = "jobs"  # under home: one status file per document absorbed in the background
JOB_STATES = ("running", "done", "failed", "cancelled", "interrupted")


@dataclass
class AbsorptionStatus:
    doc_id: str
    title: str
    state: str  # absorbed | running | failed | cancelled | interrupted | not absorbed
    error: str | None
    route: str  # the document's route in the registry ("retrieve" until an adapter lands)


class AbsorptionJob:
    """One background absorption (see :meth:`Lift.absorb_in_background`)."""

    def __init__(self, doc_id: str, title: str, home: Path):
        self.doc_id = doc_id
        self.title = title
        self.state = "running"  # running | done | failed | cancelled
        self.error: str | None = None
        self.result: AbsorbResult | None = None
        self.started = time.time()
        self.home = Path(home)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> "AbsorptionJob":
        """Block until the absorption has ended (or ``timeout`` seconds have passed)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def cancel(self) -> None:
        """Stop after the current training step; nothing is stored and the document stays retrieval-only."""
        self._cancel.set()

    def status_record(self) -> dict:
        return {"doc_id": self.doc_id, "title": self.title, "state": self.state, "error": self.error,
                "pid": os.getpid(), "started": self.started, "updated": time.time()}

    def _write_status(self) -> None:
        folder = self.home / JOBS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".{self.doc_id}.{os.getpid()}.tmp"
        temp.write_text(json.dumps(self.status_record()))
        os.replace(temp, folder / f"{self.doc_id}.json")  # readers see the old status or the new one


def _read_status(home: Path, doc_id: str) -> dict | None:
    try:
        record = json.loads((Path(home) / JOBS_DIR / f"{doc_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("state") in JOB_STATES else None


def _process_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


_RUNNING_JOBS: "weakref.WeakSet[AbsorptionJob]" = weakref.WeakSet()


@atexit.register
def _cancel_running_jobs() -> None:
    """At exit, stop background absorptions at their next step (a daemon thread killed inside torch can crash
    the interpreter) and record them as cancelled."""
    jobs = [job for job in list(_RUNNING_JOBS) if job.running]
    for job in jobs:
        job.cancel()
    for job in jobs:
        job.wait(timeout=30)


# ---------------------------------------------------------------------------------------- shared Lift

_SHARED: dict[str, Lift] = {}
_SHARED_LOCK = threading.Lock()


def shared_lift(settings: Settings | None = None) -> Lift:
    """One :class:`Lift` per settings in this process, so that tools and graph nodes share the loaded model."""
    settings = settings or load_settings()
    key = settings.model_dump_json()
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Lift(settings)
        return _SHARED[key]


def document_ref_help() -> str:
    return "a document id, an unambiguous prefix of one (4+ characters), or the exact title"


__all__ = ["Lift", "Answer", "AbsorbResult", "AbsorptionJob", "AbsorptionStatus", "MODES", "UnknownDocumentError",
           "document_ref_help", "shared_lift"]
