"""Questions written by the loaded model itself about the document, beside the rule-made ones.

SEAL (arXiv 2506.10943) found that a model's own rewrites of a passage teach it more than the raw passage. Here
the base model, before LoRA is attached, reads each passage of a few sentences and writes questions about it
(sampled, so that they differ), then answers each of them with the passage in its prompt, as it answers with
retrieved passages. A written pair is kept only when it passes checks a reader would make:

- the question is a question (ends with "?", 3 to 30 words) and not one written before;
- the answer is not an abstention, and at least ``GROUNDED_SHARE`` of its words are the passage's own (the
  model copied it from the passage rather than made it up);
- the answer is not already in the question.

The passage is read once for all its questions (its key-value cache is copied for the batch of samples), and
its questions are answered together in one batch. The time counts in the absorption's. Whether it pays is
measured in docs/recipe.md.

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
from lift_tool.generation import cache_keyword, generate_replies, read_prefix
from lift_tool.prompts import is_abstention, messages, render
from lift_tool.training.questions import QAPair, passages

if TYPE_CHECKING:
    from lift_tool.models import LoadedModel

WRITE_PROMPT = "{passage}\n\nWrite one question that the text above answers."
PASSAGE_SENTENCES = 3  # sentences per passage the model writes questions about
QUESTION_TOKENS = 40  # at most this many tokens per written question
ANSWER_TOKENS = 32
TEMPERATURE = 0.8
GROUNDED_SHARE = 0.8  # of an answer's words that must occur in its passage


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


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
    questions are sampled per passage and the usable ones kept. After ``generate``, ``written`` says how many
    questions were written."""

    def __init__(self, loaded: "LoadedModel", per_passage: int):
        self.loaded = loaded
        self.per_passage = per_passage
        self.written = 0

    def generate(self, text: str, title: str, progress: bool = False, saved: Path | None = None) -> list[QAPair]:
        """The usable pairs about ``text``; ``progress`` shows a bar over its passages (a long document's take
        minutes). ``saved``: a file the pairs are written to, and read from when it holds the pairs of the same
        text, model, number format and random state."""
        import torch

        key = self._key(text, title, torch.get_rng_state())
        kept = read_json(saved, {}) if saved is not None else {}
        if kept.get("key") == key:
            torch.set_rng_state(torch.tensor(kept["rng_state"], dtype=torch.uint8))
            self.written = kept["written"]
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
            write_json(saved, {"key": key, "written": self.written, "rng_state": torch.get_rng_state().tolist(),
                               "pairs": [dataclasses.asdict(pair) for pair in pairs]}, indent=None)
        return pairs

    def _key(self, text: str, title: str, rng_state) -> str:
        """What the written pairs depend on."""
        digest = hashlib.sha256()
        for part in (self.loaded.fingerprint, str(self.loaded.model.dtype), str(self.per_passage), WRITE_PROMPT,
                     f"{PASSAGE_SENTENCES} {QUESTION_TOKENS} {ANSWER_TOKENS} {TEMPERATURE} {GROUNDED_SHARE}", title,
                     text):
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
            questions = []
            for question in self._questions(passage.text):
                self.written += 1
                if question.lower() not in asked:  # written twice: answered and kept (or not) once
                    asked.add(question.lower())
                    questions.append(question)
            if not questions:
                continue
            replies = generate_replies(self.loaded.model, self.loaded.tokenizer,
                                       [messages(question, [title], passage.text) for question in questions],
                                       max_new_tokens=ANSWER_TOKENS)
            for question, reply in zip(questions, replies):
                if usable(question, reply, passage.text):
                    answer_words = set(_words(reply))
                    evidence = max(passage.sentences,
                                   key=lambda sentence: len(answer_words & set(_words(sentence.text))))
                    pairs.append(QAPair(question, reply, evidence.index, "written"))
            bar.set_postfix(kept=len(pairs))
        bar.close()
        return pairs

    def _questions(self, passage: str) -> list[str]:
        """``per_passage`` sampled questions about ``passage``: the prompt is read once, its cache copied for each."""
        import torch

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        prompt = render(tokenizer, [{"role": "user", "content": WRITE_PROMPT.format(passage=passage)}],
                        add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        cache = read_prefix(model, ids[:-1])  # the last token is the first one generate reads
        cache.batch_repeat_interleave(self.per_passage)
        input_ids = torch.tensor([ids] * self.per_passage, device=model.device)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                **{cache_keyword(): cache},
                max_new_tokens=QUESTION_TOKENS,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(output[:, len(ids) :], skip_special_tokens=True)
        return [text.strip().split("\n")[0].strip() for text in texts]
