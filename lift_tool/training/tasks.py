"""Training examples for absorption: the weighted mix of five kinds of example.

1. ``segments``   - language modelling on overlapping token segments of the raw text (short windows).
2. ``contextual`` - a segment preceded by the document's title and the text before it, up to a long window;
                    the loss is on the segment only (LIFT's contextualised training).
3. ``qa``         - synthetic questions asked closed-book (no document in the prompt), several per
                    conversation; the loss is on the answers only. Includes questions the document does not
                    answer, answered "The document does not say." The questions are grouped into new
                    conversations every epoch (``regroup_questions``), or once per document, so that every pass
                    repeats the same conversations (in a new order): the layers below the adapter then see the
                    same input again and their output can be reused (``layer_cache``).
4. ``qa_long``    - the same questions with a long window of the surrounding text in the prompt.
5. ``qa_passages`` - the same questions with what retrieval would put in lift+rag's prompt: the document cut into
                    retrieval's chunks, the ``k`` that share most words with the question, among them the one that
                    answers, or, in a share of the examples, not: the answer then comes from the adapter (RAFT,
                    arXiv 2403.10131). An adapter trained only with the answer in the prompt, or only without any
                    text, learns either to copy or to ignore the passages; lift+rag needs it to read them and to
                    know when they miss.

Kinds 2, 4 and 5 see long contexts and kinds 1 and 3 short ones: the long/short mix of arXiv 2509.18762, which
keeps both the ability to use knowledge in the context and knowledge stored in the parameters. The weights in
``TaskMix`` scale how often each kind appears per epoch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from lift_tool.config import TaskMix, TrainingSettings
from lift_tool.memory.retrieval import Chunk, keyword_ranking
from lift_tool.prompts import render, system_prompt, user_prompt
from lift_tool.segment import segment_tokens
from lift_tool.training.distill import SoftTargets
from lift_tool.training.questions import QAPair, split_sentences

IGNORE = -100  # label value that carries no loss


@dataclass
class Example:
    """One training example: token ids and labels (IGNORE where no loss is taken), its kind, and the sentences of
    the document it teaches (indices of ``split_sentences``; what an adapter cut short by its budget covered)."""

    kind: str
    input_ids: list[int]
    labels: list[int]  # IGNORE where there is no loss
    sentences: frozenset[int] = frozenset()
    # Context distillation: (index among the labelled tokens where an answer turn starts, the teacher's targets
    # for that turn), for the turns that have them (training.distill).
    teacher: list[tuple[int, SoftTargets]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def target_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass
class TaskPools:
    """Everything one epoch draws from, built once per document."""

    segments: list[Example] = field(default_factory=list)
    contextual: list[Example] = field(default_factory=list)
    answerable: list[QAPair] = field(default_factory=list)
    unanswerable: list[QAPair] = field(default_factory=list)
    conversations: list[Example] = field(default_factory=list)  # the fixed closed-book chats (regroup_questions off)
    windows: list[str] = field(default_factory=list)  # consecutive stretches of about long_context_tokens
    window_of_sentence: dict[int, int] = field(default_factory=dict)  # evidence sentence -> its window
    passages: list[Chunk] = field(default_factory=list)  # retrieval's chunks of the document (qa_passages)
    passage_of_sentence: dict[int, int] = field(default_factory=dict)  # evidence sentence -> the chunk holding it


class TaskBuilder:
    """Builds the training examples of one document: segments, contextual segments and questions, per epoch."""

    def __init__(self, tokenizer, text: str, title: str, training: TrainingSettings, qa_pairs: list[QAPair],
                 passages: list[Chunk] = (), passages_k: int = 4):
        """``passages``: the document cut as retrieval cuts it, and ``passages_k`` how many of them retrieval puts
        in the prompt (for ``mix.qa_passages``)."""
        self.tokenizer = tokenizer
        self.passages_k = passages_k
        self.title = title
        self.training = training
        self.system = system_prompt([title])
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=tokenizer.is_fast)
        self.doc_tokens = encoded["input_ids"]
        self.token_offsets = encoded.get("offset_mapping")  # character span of each token (fast tokenizers)
        self.sentences = split_sentences(text)
        self.teacher: dict[QAPair, SoftTargets] = {}  # filled in before the epochs are drawn, when distilling
        if training.mix.qa_passages > 0 and not passages:
            raise ValueError("mix.qa_passages needs the document's passages, cut as retrieval cuts them")
        self.pools = self._build_pools(text, qa_pairs, passages)

    # ------------------------------------------------------------------------------------------ pools

    def _build_pools(self, text: str, qa_pairs: list[QAPair], passages: list[Chunk]) -> TaskPools:
        settings = self.training
        pools = TaskPools()
        header = self.tokenizer(f"{self.title}\n\n", add_special_tokens=False)["input_ids"]
        for segment in segment_tokens(len(self.doc_tokens), settings.segment_tokens, settings.segment_stride):
            tokens = self.doc_tokens[segment.start : segment.end]
            taught = self._sentences_in(segment.start, segment.end)
            pools.segments.append(Example("segments", tokens, list(tokens), taught))
            context_length = max(0, settings.long_context_tokens - segment.length - len(header))
            before = self.doc_tokens[max(0, segment.start - context_length) : segment.start]
            prompt = header + before
            pools.contextual.append(Example("contextual", prompt + tokens, [IGNORE] * len(prompt) + tokens, taught))
        pools.answerable = [pair for pair in qa_pairs if pair.answerable]
        pools.unanswerable = [pair for pair in qa_pairs if not pair.answerable]
        if not settings.regroup_questions:
            pools.conversations = self._closed_book_conversations(pools.answerable, pools.unanswerable)
        pools.windows, pools.window_of_sentence = self._windows(text)
        pools.passages = list(passages)
        pools.passage_of_sentence = self._passage_of_sentence(pools.passages)
        return pools

    def use_teacher(self, targets: dict[QAPair, SoftTargets]) -> None:
        """Context distillation: closed-book answers built from now on carry the teacher's targets."""
        self.teacher = targets
        if self.pools.conversations:  # the fixed chats were built without them
            self.pools.conversations = self._closed_book_conversations(self.pools.answerable, self.pools.unanswerable)

    def _sentences_in(self, first_token: int, end_token: int) -> frozenset[int]:
        """The sentences that overlap a span of the document's tokens (none known without token offsets)."""
        if not self.token_offsets or end_token <= first_token:
            return frozenset()
        start, end = self.token_offsets[first_token][0], self.token_offsets[end_token - 1][1]
        return frozenset(sentence.index for sentence in self.sentences if sentence.start < end and sentence.end > start)

    def _closed_book_conversations(self, answerable: list[QAPair], unanswerable: list[QAPair]) -> list[Example]:
        """Every answerable question once, with ``mix.unanswerable`` of that many unanswerable ones, shuffled
        (seeded) and grouped ``qa_per_conversation`` to a chat."""
        rng = random.Random(self.training.seed)
        wanted = min(len(unanswerable), round(self.training.mix.unanswerable * len(answerable)))
        closed_book = answerable + rng.sample(unanswerable, wanted)
        rng.shuffle(closed_book)
        return self._chats(closed_book)

    def _chats(self, closed_book: list[QAPair]) -> list[Example]:
        size = self.training.qa_per_conversation
        return [self.conversation(closed_book[first : first + size], context=None)
                for first in range(0, len(closed_book), size)]

    def _windows(self, text: str) -> tuple[list[str], dict[int, int]]:
        """Cut the text at sentence boundaries into stretches of about ``long_context_tokens`` tokens; a
        long-context question shows the stretch that holds its evidence."""
        chars_per_token = max(1.0, len(text) / max(1, len(self.doc_tokens)))
        max_chars = int(self.training.long_context_tokens * chars_per_token)
        windows: list[str] = []
        window_of_sentence: dict[int, int] = {}
        start = None
        for sentence in self.sentences:
            if start is None:
                start = sentence.start
            elif sentence.end - start > max_chars:
                windows.append(text[start:previous_end].strip())
                start = sentence.start
            window_of_sentence[sentence.index] = len(windows)
            previous_end = sentence.end
        if start is not None:
            windows.append(text[start:previous_end].strip())
        return windows, window_of_sentence

    def _passage_of_sentence(self, passages: list[Chunk]) -> dict[int, int]:
        """Each sentence's chunk: the first that holds all of it, else the one that holds most of it."""
        found: dict[int, int] = {}
        for sentence in self.sentences:
            shares = [min(sentence.end, chunk.end) - max(sentence.start, chunk.start) for chunk in passages]
            if shares and max(shares) > 0:
                found[sentence.index] = shares.index(max(shares))
        return found

    def retrieved(self, question: str, answering: int, rng: random.Random, with_answer: bool) -> str:
        """The passages retrieval would show for ``question``: the ``passages_k`` chunks that share most of its
        words (BM25, the keyword half of the hybrid search), best first, joined as lift+rag joins them. With
        ``with_answer`` the chunk ``answering`` is among them (at a random place if its words did not rank it in);
        without, it is left out."""
        chunks, k = self.pools.passages, self.passages_k
        ranking = [int(key) for key in keyword_ranking(question, {str(i): c.text for i, c in enumerate(chunks)})]
        ranked = set(ranking)
        unranked = [i for i in range(len(chunks)) if i not in ranked]
        rng.shuffle(unranked)  # chunks that share no word with the question: any of them
        order = ranking + unranked
        if not with_answer:
            chosen = [i for i in order if i != answering][:k]
        elif answering in order[:k]:
            chosen = order[:k]
        else:
            chosen = order[: k - 1]
            chosen.insert(rng.randint(0, len(chosen)), answering)
        return "\n\n".join(chunks[i].text for i in chosen)

    # ------------------------------------------------------------------------------------------ epochs

    def epoch(self, rng: random.Random) -> list[Example]:
        """One epoch's examples, drawn according to the mix weights."""
        mix: TaskMix = self.training.mix
        pools = self.pools
        examples = _draw(pools.segments, mix.segments, rng) + _draw(pools.contextual, mix.contextual, rng)

        if self.training.regroup_questions:  # every pass's questions shuffled together into new chats
            closed_book = _draw(pools.answerable, mix.qa, rng)
            n_unanswerable = round(mix.unanswerable * len(closed_book))
            closed_book += _draw(pools.unanswerable, n_unanswerable / max(1, len(pools.unanswerable)), rng)
            rng.shuffle(closed_book)
            examples += self._chats(closed_book)
        else:
            examples += _draw(pools.conversations, mix.qa, rng)

        # Questions with their window in the prompt, several per window so the long prompt is paid for once.
        size = self.training.qa_per_conversation
        for window, group in _grouped(_draw(pools.answerable, mix.qa_long, rng), pools.window_of_sentence, size):
            examples.append(self.conversation(group, context=pools.windows[window], kind="qa_long"))

        # Questions with retrieval's passages in the prompt, grouped by the chunk that answers them.
        for answering, group in _grouped(_draw(pools.answerable, mix.qa_passages, rng), pools.passage_of_sentence,
                                         size):
            with_answer = rng.random() >= self.training.passages_without_answer
            context = self.retrieved(group[0].question, answering, rng, with_answer)
            examples.append(self.conversation(group, context=context, kind="qa_passages"))
        return examples

    def conversation(self, pairs: list[QAPair], context: str | None, kind: str = "qa") -> Example:
        """A chat with one question per turn; the context, if any, goes with the first question. Only the
        answers carry loss."""
        messages = [{"role": "system", "content": self.system}]
        input_ids: list[int] = []
        labels: list[int] = []
        teacher: list[tuple[int, SoftTargets]] = []
        for turn, pair in enumerate(pairs):
            messages.append({"role": "user", "content": user_prompt(pair.question, context if turn == 0 else None)})
            prompt_ids = self._encode(render(self.tokenizer, messages, add_generation_prompt=True))
            messages.append({"role": "assistant", "content": pair.answer})
            full_ids = self._encode(render(self.tokenizer, messages, add_generation_prompt=False))
            if full_ids[: len(prompt_ids)] != prompt_ids or prompt_ids[: len(input_ids)] != input_ids:
                raise RuntimeError("the chat template does not render conversations as prefixes of each other")
            answer = full_ids[len(prompt_ids) :]
            soft = self.teacher.get(pair) if context is None else None
            if soft is not None and soft.tokens == answer:  # the same tokens as the teacher was fed
                teacher.append((sum(label != IGNORE for label in labels), soft))
            labels += [IGNORE] * (len(prompt_ids) - len(input_ids)) + answer
            input_ids = full_ids
        sentences = frozenset(pair.sentence for pair in pairs if pair.sentence >= 0)
        return Example(kind, input_ids, labels, sentences, teacher)

    def _encode(self, rendered: str) -> list[int]:
        return self.tokenizer(rendered, add_special_tokens=False)["input_ids"]


def _draw(pool: list, weight: float, rng: random.Random) -> list:
    """``weight`` passes over a pool: whole passes, then a random part for the fraction."""
    if weight <= 0 or not pool:
        return []
    whole, fraction = int(weight), weight - int(weight)
    drawn = [item for _ in range(whole) for item in pool]
    drawn += rng.sample(pool, round(fraction * len(pool)))
    return drawn


def _grouped(pairs: list[QAPair], place_of_sentence: dict[int, int], size: int) -> list[tuple[int, list[QAPair]]]:
    """The pairs whose evidence sentence has a place (its window, its chunk), grouped by that place in the order
    the places first appear, at most ``size`` to a group."""
    by_place: dict[int, list[QAPair]] = {}
    for pair in pairs:
        if pair.sentence in place_of_sentence:
            by_place.setdefault(place_of_sentence[pair.sentence], []).append(pair)
    return [(place, same[first : first + size]) for place, same in by_place.items()
            for first in range(0, len(same), size)]


def batches(examples: list[Example], batch_tokens: int, rng: random.Random) -> list[list[Example]]:
    """Micro-batches of similar length (little padding) holding at most ``batch_tokens`` padded tokens each,
    in random order."""
    ordered = sorted(examples, key=len)
    result: list[list[Example]] = []
    current: list[Example] = []
    for example in ordered:
        longest = max([len(example)] + [len(item) for item in current])
        if current and longest * (len(current) + 1) > batch_tokens:
            result.append(current)
            current = []
        current.append(example)
    if current:
        result.append(current)
    rng.shuffle(result)
    return result


def coverage(micro_batches: list[list[Example]], trained: int) -> float:
    """The share of the sentences the plan teaches that its first ``trained`` micro-batches taught: 1.0 for a
    whole absorption, less for one its time budget cut short."""
    def taught(part: list[list[Example]]) -> set[int]:
        return {index for batch in part for example in batch for index in example.sentences}

    planned = taught(micro_batches)
    return len(taught(micro_batches[:trained]) & planned) / len(planned) if planned else 1.0


def estimate_epoch_tokens(builder: TaskBuilder) -> int:
    """Tokens one epoch processes (for progress bars and the router's cost estimate)."""
    sample = builder.epoch(random.Random(0))
    return sum(len(example) for example in sample)


def steps_per_epoch(builder: TaskBuilder, training: TrainingSettings) -> int:
    sample = builder.epoch(random.Random(0))
    return math.ceil(len(batches(sample, training.batch_tokens, random.Random(0))) / training.grad_accum)
