"""Answering from memory: one pipeline for a question (``Lift.ask``) and for a conversation (``Lift.chat``).

    question ──► documents (the ones named, or chosen by retrieval) ──► mode (auto: adapter, document or passages)
             ──► passages for the prompt (retrieved chunks, or the documents cut to the window) ──► prompt
             ──► generation, with the documents' adapters active where the mode uses them (in this process, or on
                 the vLLM server of lift_tool.served)
             ──► lift+rag's trust rule ──► Answer (the text, the mode used, the documents and passages cited)

A question and a conversation differ only in their prompt (:class:`QuestionPrompt`, :class:`ConversationPrompt`).
The answer modes are defined here, once (``Mode``, ``MODES``, ``ADAPTER_MODES``), for every face that offers them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, get_args

from lift_tool.errors import ConfigError, InputError
from lift_tool.generation import PrefixCache, Reply, context_budget, fit_context, generate_reply
from lift_tool.prompts import NOT_IN_DOCUMENT, is_abstention, messages, render, system_prompt, user_prompt
from lift_tool.served import ServedModel

if TYPE_CHECKING:
    from lift_tool.lift import Lift
    from lift_tool.memory.registry import AdapterEntry, DocumentEntry
    from lift_tool.memory.retrieval import RetrievedChunk

Mode = Literal["auto", "base", "lift", "lift+context", "rag", "lift+rag", "context"]
MODES: tuple[str, ...] = get_args(Mode)
ADAPTER_MODES = frozenset({"lift", "lift+context", "lift+rag"})  # the modes that answer with the documents' adapters
RETRIEVAL_MODES = frozenset({"rag", "lift+rag"})  # the modes that put retrieved passages in the prompt
DOCUMENT_MODES = frozenset({"context", "lift+context"})  # the modes that put the documents, cut to the window, in it
NOTHING_MATCHES = "None of the stored documents seems to be about this question."


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")


@dataclass
class Answer:
    """An answer from memory: its text, the mode that gave it, and what it came from (see :meth:`sources`)."""

    text: str
    mode: str  # the mode actually used ("none" when no document matched)
    documents: list[tuple[str, str]] = field(default_factory=list)  # (doc_id, title)
    chunks: list["RetrievedChunk"] = field(default_factory=list)  # the retrieved context, for citations
    seconds: float = 0.0
    least_token_probability: float = 1.0  # how sure the model was of the least sure token of ``text``
    input_tokens: int = 0  # tokens the model read, over every generation the answer took (usage, as LangChain counts it)
    output_tokens: int = 0  # tokens it wrote, over every generation

    def sources(self) -> dict[str, list[dict[str, Any]]]:
        """What the answer cites, as plain (JSON-ready) data, for each face to show in its own way:

        - ``documents``: the documents it answered from, in order: ``doc_id``, ``title``, and ``passages``, the
          numbers of their chunks that were retrieved into the prompt (ascending; none outside rag and lift+rag);
        - ``passages``: those chunks, best first: ``doc_id``, ``title``, ``index``, ``start`` and ``end`` (character
          offsets in the document), ``score`` (to 4 decimals) and ``text``.
        """
        documents = [
            {"doc_id": doc_id, "title": title,
             "passages": sorted({chunk.index for chunk in self.chunks if chunk.doc_id == doc_id})}
            for doc_id, title in self.documents
        ]
        passages = [
            {"doc_id": c.doc_id, "title": c.title, "index": c.index, "start": c.start, "end": c.end,
             "score": round(c.score, 4), "text": c.text}
            for c in self.chunks
        ]
        return {"documents": documents, "passages": passages}


def keeps_adapter_answer(reply: Reply, min_probability: float) -> bool:
    """Whether lift+rag keeps the adapter's answer rather than read the passages without it: the model gave every
    token at least ``min_probability``, and the answer is not that the document does not tell. An adapter says
    so, sure of it, about details its training questions missed; the retrieved passages may hold them."""
    return reply.least_token_probability >= min_probability and not is_abstention(reply.text)


# ------------------------------------------------------------------------------------------------ prompts


class QuestionPrompt:
    """One question (``Lift.ask``): a system prompt that names the documents, then the passages and the question.

    ``context``: the caller's own text for the prompt instead of passages from memory. The part before the question
    is kept in the prefix cache, so that the next question about the same context does not read it again.
    """

    caches_prefix = True

    def __init__(self, question: str, context: str | None = None):
        self.question = question
        self.context = context
        self.passages: str | None = None

    def room(self, tokenizer, window: int, titles: list[str], max_new_tokens: int) -> int:
        """Tokens left for passages (a multiple of 256, so that every question cuts a long document alike)."""
        return context_budget(tokenizer, window, self.question, titles, max_new_tokens)

    def messages(self, titles: list[str]) -> list[dict[str, str]]:
        return messages(self.question, titles, self.passages)


class ConversationPrompt:
    """A conversation (``Lift.chat``): the earlier turns, then the passages and the last user message.

    A system message in the conversation replaces the one that names the documents; the oldest turns are left out
    when the conversation would overflow the window.
    """

    caches_prefix = False  # every turn changes what comes before the question
    context = None

    def __init__(self, conversation: list[dict[str, str]]):
        turns = [{"role": m["role"], "content": m["content"]} for m in conversation]
        if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
            raise InputError("the conversation must end with a user message that asks something")
        self.turns = turns
        self.question = turns[-1]["content"].strip()
        self.own_system = turns[0]["role"] == "system"  # the caller's system message is kept as it is
        self.titles: list[str] = []
        self.passages: str | None = None

    def room(self, tokenizer, window: int, titles: list[str], max_new_tokens: int) -> int:
        """Tokens left for passages, once the oldest turns (never the system message or the question) are left out
        until the answer fits."""
        self.titles = titles
        if not self.own_system:
            self.turns.insert(0, {"role": "system", "content": system_prompt(titles)})

        def prompt_tokens(with_passages: str | None) -> int:
            prompt = self.turns[:-1] + [{"role": "user", "content": user_prompt(self.question, with_passages)}]
            return len(tokenizer(render(tokenizer, prompt, True), add_special_tokens=False)["input_ids"])

        while len(self.turns) > 2 and prompt_tokens(None) + max_new_tokens > window:
            del self.turns[1]
        return max(0, window - prompt_tokens("x") - max_new_tokens - 8)

    def messages(self, titles: list[str]) -> list[dict[str, str]]:
        turns = self.turns[:-1] + [{"role": "user", "content": user_prompt(self.question, self.passages)}]
        if titles != self.titles and not self.own_system:  # one document of several: name that one only
            turns = [{"role": "system", "content": system_prompt(titles)}] + turns[1:]
        return turns


# ----------------------------------------------------------------------------------------------- pipeline

Generate = Callable[..., Reply]  # generate(model, titles, on_text, state, give_up_below=0.0)


class Answering:
    """The answering pipeline of one :class:`~lift_tool.lift.Lift` (``lift.answering``).

    It uses the Lift's parts (settings, registry, retrieval store, model, adapter pool) as they are at each call,
    and holds the Lift's lock while it uses the model. It keeps the prefix cache of the last long prompt read.
    """

    def __init__(self, lift: "Lift"):
        self.lift = lift
        self.prefix_cache = PrefixCache()  # the last long prompt prefix read, for the next question about it

    def ask(self, question: str, documents: "list[str] | str | None" = None, mode: str = "auto",
            max_new_tokens: int | None = None, on_text: Callable[[str], None] | None = None,
            context: str | None = None) -> Answer:
        """See :meth:`Lift.ask`."""
        check_mode(mode)
        if context is not None and mode not in {"base", "lift", "auto"}:
            raise ConfigError(f"a given context goes with mode base or lift, not {mode!r}")
        question = question.strip()
        if not question:
            raise InputError("the question is empty")
        self._check_length(question)
        started = time.monotonic()
        entries = self._documents(question, documents)
        if not entries and mode != "base":
            return Answer(NOTHING_MATCHES, "none", seconds=time.monotonic() - started)
        return self._answer(QuestionPrompt(question, context), entries, mode, max_new_tokens, on_text, started)

    def chat(self, conversation: list[dict[str, str]], documents: "list[str] | str | None" = None, mode: str = "auto",
             max_new_tokens: int | None = None, on_text: Callable[[str], None] | None = None,
             stop: list[str] | None = None, temperature: float | None = None) -> Answer:
        """See :meth:`Lift.chat`."""
        check_mode(mode)
        prompt = ConversationPrompt(conversation)
        self._check_length(prompt.question)
        started = time.monotonic()
        entries = self._documents(prompt.question, documents)
        if not entries:  # a conversation may be about anything: the base model answers
            mode = "base"
        return self._answer(prompt, entries, mode, max_new_tokens, on_text, started, stop, temperature)

    def _check_length(self, question: str) -> None:
        """Refuse a question over ``settings.max_question_tokens`` before anything reads it: a megabyte of question
        would keep retrieval and the model busy for minutes. A question that is not valid Unicode cannot be read."""
        try:
            question.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("the question holds characters that are not valid Unicode (a lone surrogate): send it "
                             "as UTF-8 text") from None
        limit = self.lift.settings.max_question_tokens
        if len(question) <= limit:  # a token is at least one character
            return
        head = question[: limit * 16]  # more than 16 characters a token on average is no text
        tokens = len(self.lift.loaded.tokenizer(head, add_special_tokens=False)["input_ids"])
        if tokens > limit or len(question) > len(head):
            raise InputError(f"the question is over {limit:,} tokens (LIFT_MAX_QUESTION_TOKENS): ask a shorter "
                             "question, and absorb or index a long text as a document instead")

    def _documents(self, question: str, documents: "list[str] | str | None") -> list["DocumentEntry"]:
        if isinstance(documents, str):
            documents = [documents]
        if documents:
            return [self.lift.registry.resolve(ref) for ref in documents]
        return self.lift.choose_documents(question)

    def _answer(self, prompt: "QuestionPrompt | ConversationPrompt", entries: list["DocumentEntry"], mode: str,
                max_new_tokens: int | None, on_text: Callable[[str], None] | None, started: float,
                stop: list[str] | None = None, temperature: float | None = None) -> Answer:
        lift = self.lift
        usage = [0, 0]  # tokens read and written, over every generation of this answer
        with lift.lock:
            tokenizer = lift.loaded.tokenizer
            if mode == "auto":
                mode = self._auto_mode(entries)
                if prompt.context is not None:  # the caller's own context takes the passages' place
                    mode = "lift" if mode == "lift+rag" else "base"
            titles = [entry.title for entry in entries]
            max_new_tokens = max_new_tokens or lift.settings.max_new_tokens
            budget = prompt.room(tokenizer, lift.context_window, titles, max_new_tokens)

            chunks: list = []
            if prompt.context is not None:
                prompt.passages = fit_context(tokenizer, prompt.context, budget)
            elif mode in RETRIEVAL_MODES:
                chunks = self._retrieve(prompt.question, entries)
                prompt.passages = fit_context(tokenizer, "\n\n".join(chunk.text for chunk in chunks), budget)
            elif mode in DOCUMENT_MODES:
                texts = [lift.registry.document_text(entry.doc_id) for entry in entries]
                joined = texts[0] if len(texts) == 1 else "\n\n".join(f"# {t}\n{x}" for t, x in zip(titles, texts))
                prompt.passages = fit_context(tokenizer, joined, budget)

            def generate(model, for_titles: list[str], stream, state: str, give_up_below: float = 0.0) -> Reply:
                # The prefix cache holds one prompt about these documents: not one about one document of several.
                cache = self.prefix_cache if prompt.caches_prefix and for_titles == titles else None
                if isinstance(model, ServedModel):  # on the vLLM server, which keeps its own prefix cache
                    reply = model.server.reply(tokenizer, prompt.messages(for_titles), model.adapter, max_new_tokens,
                                               stream, stop=stop, temperature=temperature)
                else:
                    reply = generate_reply(model, tokenizer, prompt.messages(for_titles), max_new_tokens, stream,
                                           prefix_cache=cache, state=state, give_up_below=give_up_below, stop=stop,
                                           temperature=temperature)
                usage[0] += reply.prompt_tokens
                usage[1] += reply.output_tokens
                return reply

            reply, mode = self._reply(mode, entries, titles, generate, on_text)
        return Answer(reply.text, mode, [(e.doc_id, e.title) for e in entries], chunks, time.monotonic() - started,
                      reply.least_token_probability, input_tokens=usage[0], output_tokens=usage[1])

    def _retrieve(self, question: str, entries: list["DocumentEntry"]) -> list["RetrievedChunk"]:
        retrieval = self.lift.settings.retrieval
        return self.lift.store.search(question, k=retrieval.k, doc_ids=[e.doc_id for e in entries],
                                      method=retrieval.search)

    def _auto_mode(self, entries: list["DocumentEntry"]) -> str:
        """lift+rag where every document has an adapter for this model, else context if they fit, else rag."""
        fingerprint = self.lift.loaded.fingerprint
        if all(any(a.base_fingerprint == fingerprint for a in entry.adapters) for entry in entries):
            return "lift+rag"
        total = sum(entry.tokens for entry in entries)
        if total + 256 <= self.lift.context_window:
            return "context"
        return "rag"

    def _reply(self, mode: str, entries: list["DocumentEntry"], titles: list[str], generate: Generate,
               on_text: Callable[[str], None] | None) -> tuple[Reply, str]:
        """Answer in ``mode`` (resolved, not auto); the reply and the mode that gave it.

        ``generate(model, titles, on_text, state, give_up_below=0.0)`` writes a reply about the documents named in
        ``titles`` (the same prompt whichever documents it names); ``state`` names the adapters active on ``model``,
        for the prefix cache; ``give_up_below`` as in :func:`lift_tool.generation.generate_reply`.
        """
        lift = self.lift
        if mode not in ADAPTER_MODES:
            with lift.generator.base() as model:
                return generate(model, titles, on_text, "base"), mode
        loaded = lift.loaded
        adapters = [lift.registry.adapter_for(entry.doc_id, loaded.fingerprint, loaded.name) for entry in entries]
        if mode != "lift+rag":  # lift, lift+context: the adapter answers with what the prompt holds
            return self._answer_with_adapters(adapters, titles, generate, on_text), mode
        # lift+rag: the adapter's answer is kept only if the model was sure of it; an adapter that has not learnt
        # the answer (a document absorbed under a short budget, say) is set aside, and the passages in the prompt
        # are read without it, as rag does (benchmarks/results/adapter_trust/smollm2-135m.md). So nothing streams
        # until then, and the adapter's answer stops at its first unsure token: the rest would be thrown away.
        min_probability = lift.settings.retrieval.adapter_min_probability
        reply = self._answer_with_adapters(adapters, titles, generate, None, give_up_below=min_probability)
        if not keeps_adapter_answer(reply, min_probability):
            with lift.generator.base() as model:
                reply, mode = generate(model, titles, None, "base"), "rag"
        if on_text:
            on_text(reply.text)
        return reply, mode

    def _answer_with_adapters(self, adapters: list["AdapterEntry"], titles: list[str], generate: Generate,
                              on_text: Callable[[str], None] | None, give_up_below: float = 0.0) -> Reply:
        """Answer with the documents' adapters (``generate`` and ``give_up_below`` as in :meth:`_reply`)."""
        pool = self.lift.generator
        state = "+".join(adapter.key for adapter in adapters)
        if len(adapters) == 1:
            with pool.activate(adapters[0]) as model:
                return generate(model, titles, on_text, state, give_up_below)
        if self.lift.settings.multi_document == "combine":
            with pool.combine(adapters, how="cat") as model:
                return generate(model, titles, on_text, state, give_up_below)
        # per-document: each adapter answers about its own document; documents that say they do not know are
        # left out (benchmarks/results/multi_document/smollm2-135m.md: this beats combining the adapters). Each reply is
        # written out in full (no giving up): a reply cut short could no longer be told to be such a refusal.
        replies = []
        for adapter, title in zip(adapters, titles):
            with pool.activate(adapter) as model:
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


__all__ = ["ADAPTER_MODES", "DOCUMENT_MODES", "MODES", "Mode", "NOTHING_MATCHES", "Answer", "Answering",
           "ConversationPrompt", "QuestionPrompt", "check_mode", "keeps_adapter_answer"]
