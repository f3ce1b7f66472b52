"""What the loaded model itself writes about the document to train on, beside the rule-made questions.

SEAL (arXiv 2506.10943) found that a model's own rewrites of a passage teach it more than the raw passage, and
Allen-Zhu and Li (arXiv 2309.14316) that a fact learnt in one wording is recalled when asked in another only if
training saw it in several. Here the base model, before LoRA is attached, reads each passage of a few sentences
and writes, sampled so that they differ:

- **questions** about it (``per_passage``), then answers each of them with the passage in its prompt, as it
  answers with retrieved passages. A written pair is kept only when it passes checks a reader would make: the
  question is a question (ends with "?", 3 to 30 words) and not one written before; the answer is not an
  abstention, and at least ``GROUNDED_SHARE`` of its words are the passage's own (the model copied it from the
  passage rather than made it up); the answer is not already in the question.
- **restatements** of it (``restatements``): the passage in other words, or its facts one to a line. A
  restatement is kept when it is not a near copy of the passage and every number and name in it is the
  passage's; the rule generator's questions about it (``questions_per_sentence``) join the others, so that each
  fact is asked and answered in more than the document's own wording.

The passage is read once for all its samples (its key-value cache is copied for the batch), and its questions
are answered together in one batch. The time counts in the absorption's. Whether it pays is measured in
docs/recipe.md.

Writing takes minutes on a long document, so an absorption that keeps a checkpoint keeps the written pairs
beside it (``saved``): an interrupted absorption that goes on reads them back, with the random state the writing
left, instead of writing them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from lift_tool.files import read_json, write_json
from lift_tool.generation import generate_replies, sample_replies
from lift_tool.prompts import is_abstention, messages
from lift_tool.training.questions import Passage, QAPair, RuleQuestionGenerator, Sentence, passages, split_sentences

if TYPE_CHECKING:
    from lift_tool.models import LoadedModel

WRITE_PROMPT = "{passage}\n\nWrite one question that the text above answers."
PASSAGE_SENTENCES = 3  # sentences per passage the model writes questions about
QUESTION_TOKENS = 40  # at most this many tokens per written question
ANSWER_TOKENS = 32
TEMPERATURE = 0.8
GROUNDED_SHARE = 0.8  # of an answer's words that must occur in its passage
# Restatements alternate between these requests; the second gives short sentences that ask differently.
RESTATE_PROMPTS = ("{passage}\n\nRewrite the text above in your own words, keeping every name, number and date.",
                   "{passage}\n\nList the facts in the text above, one short sentence per fact.")
RESTATEMENT_TOKENS = 1.5  # at most this many tokens per token of the passage
NEAR_COPY = 0.9  # a restatement that shares this share of its word pairs with the passage is a near copy


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _word_pairs(words: list[str]) -> set[tuple[str, str]]:
    return set(zip(words, words[1:]))


def restatement_usable(restatement: str, passage: str) -> bool:
    """Whether a restatement of ``passage`` is worth asking questions about: at least five words, not a near copy
    (under ``NEAR_COPY`` of its word pairs in the passage), and no number, or capitalised word within a sentence,
    that the passage lacks."""
    words = _words(restatement)
    if len(words) < 5:
        return False
    passage_words = _words(passage)
    pairs = _word_pairs(words)
    if len(pairs & _word_pairs(passage_words)) >= NEAR_COPY * len(pairs):
        return False
    known = set(passage_words)
    # Numbers, and capitalised words not at the start of a sentence.
    named = re.findall(r"(?<![.!?]\s)(?<!^)\b(?:[A-Z][A-Za-z]+|[0-9][0-9,.]*[0-9]|[0-9])\b", restatement)
    return all(set(_words(name)) <= known for name in named)


def as_sentences(reply: str) -> str:
    """A restatement as running sentences: list marks dropped, each line ended with a full stop."""
    lines = []
    for line in reply.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip()
        if line and not line.endswith(":"):
            lines.append(line if line[-1] in ".!?" else line + ".")
    return " ".join(lines)


def usable(question: str, answer: str, passage: str) -> bool:
    """Whether a written question and the model's answer to it are worth training on (the checks above)."""
    question_words, answer_words = _words(question), _words(answer)
    if not question.endswith("?") or not 3 <= len(question_words) <= 30:
        return False
    if not answer_words or is_abstention(answer):
        return False
    passage_words = set(_words(passage))
    if sum(word in passage_words for word in answer_words) < GROUNDED_SHARE * len(answer_words):
        return False
    return not set(answer_words) <= set(question_words)


class ModelQuestionWriter:
    """Question-answer pairs written by ``loaded``'s model about each passage of a document: ``per_passage``
    questions are sampled per passage and the usable ones kept, and the rule generator's questions (at most
    ``questions_per_sentence`` a sentence) about ``restatements`` sampled restatements of it. After ``generate``,
    ``written`` says how many questions were written and ``restated`` how many restatements were kept."""

    def __init__(self, loaded: "LoadedModel", per_passage: int, restatements: int = 0, questions_per_sentence: int = 4,
                 seed: int = 0):
        self.loaded = loaded
        self.per_passage = per_passage
        self.restatements = restatements
        self.rules = RuleQuestionGenerator(questions_per_sentence, seed=seed)
        self.written = 0
        self.restated = 0

    def generate(self, text: str, title: str, progress: bool = False, saved: Path | None = None) -> list[QAPair]:
        """The usable pairs about ``text``; ``progress`` shows a bar over its passages (a long document's take
        minutes). ``saved``: a file the pairs are written to, and read from when it holds the pairs of the same
        text, model, number format, settings and random state."""
        import torch

        key = self._key(text, title, torch.get_rng_state())
        kept = read_json(saved, {}) if saved is not None else {}
        if kept.get("key") == key:
            torch.set_rng_state(torch.tensor(kept["rng_state"], dtype=torch.uint8))
            self.written, self.restated = kept["written"], kept.get("restated", 0)
            return [QAPair(**pair) for pair in kept["pairs"]]
        model = self.loaded.model
        was_training = model.training
        model.eval()
        try:
            pairs = self._generate(text, title, progress)
        finally:
            model.train(was_training)
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            write_json(saved, {"key": key, "written": self.written, "restated": self.restated,
                               "rng_state": torch.get_rng_state().tolist(),
                               "pairs": [dataclasses.asdict(pair) for pair in pairs]}, indent=None)
        return pairs

    def _key(self, text: str, title: str, rng_state) -> str:
        """What the written pairs depend on (restatements only when there are any, so that the key of pairs
        written before restatements existed still matches)."""
        digest = hashlib.sha256()
        parts = [self.loaded.fingerprint, str(self.loaded.model.dtype), str(self.per_passage), WRITE_PROMPT,
                 f"{PASSAGE_SENTENCES} {QUESTION_TOKENS} {ANSWER_TOKENS} {TEMPERATURE} {GROUNDED_SHARE}", title, text]
        if self.restatements:
            parts += [str(self.restatements), *RESTATE_PROMPTS, f"{RESTATEMENT_TOKENS} {NEAR_COPY}",
                      f"{self.rules.max_per_sentence} {self.rules.seed}"]
        for part in parts:
            digest.update(part.encode() + b"\0")
        digest.update(rng_state.numpy().tobytes())
        return digest.hexdigest()

    def _generate(self, text: str, title: str, progress: bool) -> list[QAPair]:
        from tqdm.auto import tqdm

        pairs: list[QAPair] = []
        asked: set[str] = set()
        bar = tqdm(passages(text, PASSAGE_SENTENCES), desc="writing questions", unit="passage", disable=not progress,
                   leave=False)
        for passage in bar:
            if self.per_passage:
                pairs += self._written_pairs(passage, title, asked)
            if self.restatements:
                pairs += self._restated_pairs(passage, title)
            bar.set_postfix(kept=len(pairs))
        bar.close()
        return pairs

    def _written_pairs(self, passage: Passage, title: str, asked: set[str]) -> list[QAPair]:
        """The usable ones of ``per_passage`` questions written about ``passage`` and answered over it."""
        questions = []
        request = WRITE_PROMPT.format(passage=passage.text)
        for reply in sample_replies(self.loaded.model, self.loaded.tokenizer, request, self.per_passage,
                                    QUESTION_TOKENS, TEMPERATURE):
            question = reply.split("\n")[0].strip()
            self.written += 1
            if question.lower() not in asked:  # written twice: answered and kept (or not) once
                asked.add(question.lower())
                questions.append(question)
        if not questions:
            return []
        replies = generate_replies(self.loaded.model, self.loaded.tokenizer,
                                   [messages(question, [title], passage.text) for question in questions],
                                   max_new_tokens=ANSWER_TOKENS)
        return [QAPair(question, reply, _evidence(passage, reply).index, "written")
                for question, reply in zip(questions, replies) if usable(question, reply, passage.text)]

    def _restated_pairs(self, passage: Passage, title: str) -> list[QAPair]:
        """The rule questions about the usable ones of ``restatements`` restatements of ``passage``."""
        tokenizer = self.loaded.tokenizer
        budget = round(RESTATEMENT_TOKENS * len(tokenizer(passage.text, add_special_tokens=False)["input_ids"]))
        replies = []
        for first, prompt in enumerate(RESTATE_PROMPTS):  # the restatements alternate between the requests
            count = len(range(first, self.restatements, len(RESTATE_PROMPTS)))
            if count:
                replies += sample_replies(self.loaded.model, tokenizer, prompt.format(passage=passage.text), count,
                                          budget, TEMPERATURE)
        pairs = []
        for reply in map(as_sentences, replies):
            if restatement_usable(reply, passage.text):
                self.restated += 1
                pairs += restated_pairs(reply, passage, title, self.rules)
        return pairs


def restated_pairs(restatement: str, passage: Passage, title: str, rules: RuleQuestionGenerator) -> list[QAPair]:
    """``rules``' questions about a restatement of ``passage``, each with the passage's sentence closest to the
    restated sentence it asks about as its evidence."""
    restated = split_sentences(restatement)
    return [QAPair(pair.question, pair.answer, _evidence(passage, restated[pair.sentence].text).index, "restated")
            for pair in rules.generate(restatement, title)]


def _evidence(passage: Passage, text: str) -> Sentence:
    """The sentence of ``passage`` that shares most words with ``text``."""
    words = set(_words(text))
    return max(passage.sentences, key=lambda sentence: len(words & set(_words(sentence.text))))
