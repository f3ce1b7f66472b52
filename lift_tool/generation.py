"""Generation: the model's reply to a prompt, as the model is (bare or with an adapter active), with how sure it
was of it. Greedy; text can be streamed as it is produced; several replies can be written in one batch. Also
what fits a prompt to the window (``fit_context``, ``context_budget``) and the prefix cache that reads a long
context once for several questions.

``lift_tool.answering`` decides what goes into the prompt and which adapters are active; this module only
generates."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from lift_tool.prompts import QUESTION_MARKER, messages, render


def cache_keyword() -> str:
    """The name of a model's key/value cache, as ``generate`` takes it and model outputs hold it: transformers
    5.24 renamed ``past_key_values`` to ``cache``, and warns about the old name."""
    import transformers

    major_minor = tuple(int(part) for part in transformers.__version__.split(".")[:2])
    return "cache" if major_minor >= (5, 24) else "past_key_values"


def read_prefix(model, prefix_ids: list[int]):
    """The key/value cache of ``prefix_ids``, for ``generate`` to go on from."""
    import torch

    with torch.inference_mode():
        prefix = torch.tensor([prefix_ids], device=model.device)
        # The decoder alone: the prefix's next-token scores are never used, and for a 3k-token prefix the output
        # layer alone would cost seconds and a gigabyte of scores.
        output = model.get_decoder()(input_ids=prefix, use_cache=True)
    return getattr(output, cache_keyword())


class PrefixCache:
    """The key/value cache of the last long prompt prefix (instructions and context, up to the question), so
    that several questions about the same text pay for reading it once.

    A prefix is reused only with the same model state (``state``: which adapter is active, if any) and the same
    tokens. One entry is kept: questions about one document tend to come together.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._cache = None

    def lookup(self, model, state: str, prefix_ids: list[int]):
        """A private copy of the cache for ``prefix_ids``, computed on a miss."""
        key = (id(model), state, tuple(prefix_ids))
        if key != self._key:
            self._cache = read_prefix(model, prefix_ids)
            self._key = key
        return copy.deepcopy(self._cache)  # generation appends to the cache it is given

    def clear(self) -> None:
        self._key, self._cache = None, None


@dataclass
class Reply:
    """What the model wrote, and how sure it was of it."""

    text: str
    # The lowest probability the model gave to a token of the text as it chose it (1.0 for an empty text): how sure
    # it was of its least sure word. lift+rag sets aside an adapter's answer that is not sure enough.
    least_token_probability: float = 1.0
    prompt_tokens: int = 0  # tokens the model read (the whole prompt, a cached prefix included)
    output_tokens: int = 0  # tokens it wrote (a stop sequence's tokens included, the end-of-turn token not)


def generate_reply(
    model,
    tokenizer,
    conversation: list[dict[str, str]],
    max_new_tokens: int = 64,
    on_text: Callable[[str], None] | None = None,
    prefix_cache: PrefixCache | None = None,
    state: str = "base",
    give_up_below: float = 0.0,
    stop: list[str] | None = None,
    temperature: float | None = None,
) -> Reply:
    """The assistant's reply to ``conversation`` (greedy unless ``temperature`` > 0), with how sure the model was.

    With a ``prefix_cache``, a prompt with context is split before its question: the part before is read once
    and reused for later questions about the same context with the same model ``state``.
    ``give_up_below``: stop as soon as the model gives a token less than this probability, for a caller that sets
    such a reply aside anyway (lift+rag). The reply then ends at that token, its ``least_token_probability`` below
    the threshold.
    ``stop``: strings that end the reply: generation stops at the step that writes one, and the reply ends before
    it (nothing of it is streamed either).
    ``temperature``: above 0, tokens are sampled at this temperature instead of chosen greedily.
    """
    import torch
    from transformers import StoppingCriteriaList

    prompt = render(tokenizer, conversation, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    past = None
    cut = prompt.rfind(QUESTION_MARKER)
    if prefix_cache is not None and cut > 0:
        prefix_ids = tokenizer(prompt[: cut + len(QUESTION_MARKER)], add_special_tokens=False)["input_ids"]
        # Only when the prompt's tokens start with exactly the prefix's tokens (no merge across the cut).
        if inputs["input_ids"][0, : len(prefix_ids)].tolist() == prefix_ids and len(prefix_ids) < inputs["input_ids"].shape[1]:
            past = prefix_cache.lookup(model, state, prefix_ids)
    stops = [marker for marker in stop or () if marker]
    streamer = _CallbackStreamer(tokenizer, on_text, stops) if on_text else None
    stop_ids = _stop_ids(tokenizer)
    prompt_length = inputs["input_ids"].shape[1]
    criteria = ([_UnsureToken(give_up_below)] if give_up_below > 0 else []) + (
        [_StopStrings(tokenizer, prompt_length, stops)] if stops else [])
    sample = temperature is not None and temperature > 0
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            **{cache_keyword(): past},
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_ids,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList(criteria) if criteria else None,
            output_scores=give_up_below > 0,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new_tokens = output.sequences[0, prompt_length:]
        # The unprocessed scores of each step: the model's own probabilities, before any repetition penalty.
        chosen = [torch.softmax(logits[0].float(), dim=-1)[token].item()
                  for logits, token in zip(output.logits, new_tokens.tolist()) if token not in stop_ids]
    text = cut_at_stop(tokenizer.decode(new_tokens, skip_special_tokens=True), stops).strip()
    written = sum(1 for token in new_tokens.tolist() if token not in stop_ids and token != tokenizer.pad_token_id)
    return Reply(text, min(chosen, default=1.0), prompt_tokens=prompt_length, output_tokens=written)


def generate_replies(model, tokenizer, conversations: list[list[dict[str, str]]],
                     max_new_tokens: int = 64) -> list[str]:
    """Greedy replies to several conversations in one batch, the prompts padded on the left. Each step of the
    batch reads the model's weights once for all its replies, so a few replies in one batch take less time than
    one after another (docs/recipe.md, step 13)."""
    import torch

    prompts = [tokenizer(render(tokenizer, conversation, add_generation_prompt=True), add_special_tokens=False)
               ["input_ids"] for conversation in conversations]
    width = max(len(prompt) for prompt in prompts)
    stop_ids = _stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    input_ids = torch.tensor([[pad] * (width - len(prompt)) + prompt for prompt in prompts], device=model.device)
    attention_mask = torch.tensor([[0] * (width - len(prompt)) + [1] * len(prompt) for prompt in prompts],
                                  device=model.device)
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=pad,
                                eos_token_id=stop_ids)
    return [text.strip() for text in tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)]


def sample_replies(model, tokenizer, request: str, count: int, max_new_tokens: int, temperature: float) -> list[str]:
    """``count`` replies to one user message, sampled so that they differ: the prompt is read once and its cache
    copied for each."""
    import torch

    prompt = render(tokenizer, [{"role": "user", "content": request}], add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    cache = read_prefix(model, ids[:-1])  # the last token is the first one generate reads
    cache.batch_repeat_interleave(count)
    input_ids = torch.tensor([ids] * count, device=model.device)
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                **{cache_keyword(): cache}, max_new_tokens=max_new_tokens, do_sample=True,
                                temperature=temperature, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
    return [text.strip() for text in tokenizer.batch_decode(output[:, len(ids) :], skip_special_tokens=True)]


def cut_at_stop(text: str, stops: list[str]) -> str:
    """``text`` up to the first place where one of ``stops`` begins (all of it when none occurs)."""
    ends = [found for marker in stops if (found := text.find(marker)) >= 0]
    return text[: min(ends)] if ends else text


def _held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of ``text`` could be the start of a stop string (not to be shown yet)."""
    longest = 0
    for marker in stops:
        for size in range(min(len(marker) - 1, len(text)), longest, -1):
            if marker.startswith(text[-size:]):
                longest = size
                break
    return longest


def answer(model, tokenizer, question: str, titles: list[str], context: str | None = None, max_new_tokens: int = 64,
           on_text: Callable[[str], None] | None = None, prefix_cache: PrefixCache | None = None,
           state: str = "base") -> str:
    """Answer ``question`` about the documents named in ``titles``; ``context`` goes in the prompt if given."""
    return generate_reply(model, tokenizer, messages(question, titles, context), max_new_tokens, on_text, prefix_cache,
                          state).text


def fit_context(tokenizer, text: str, budget_tokens: int) -> str:
    """``text`` cut to ``budget_tokens`` tokens by removing its middle (as LIFT's truncated in-context baseline
    does): the beginning and end of a document usually say the most about it."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget_tokens:
        return text
    if budget_tokens <= 0:
        return ""
    head, tail = middle_cut(budget_tokens)
    return tokenizer.decode(ids[:head]) + "\n[…]\n" + tokenizer.decode(ids[-tail:])


def middle_cut(budget_tokens: int) -> tuple[int, int]:
    """The tokens that :func:`fit_context` keeps of a text longer than ``budget_tokens``: how many from its
    beginning and how many from its end."""
    return budget_tokens // 2, budget_tokens - budget_tokens // 2


def context_budget(tokenizer, context_window: int, question: str, titles: list[str], max_new_tokens: int) -> int:
    """Tokens left for context once the prompt around it and the answer are accounted for, rounded down to a
    multiple of 256 so that questions of different lengths cut a long document the same way (and the prefix
    cache can reuse what one question read for the next)."""
    overhead = len(tokenizer(render(tokenizer, messages(question, titles, "x"), True), add_special_tokens=False)["input_ids"])
    room = max(0, context_window - overhead - max_new_tokens - 8)
    return room - room % 256 if room >= 256 else room


def _stop_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


class _UnsureToken:
    """Stops generation once the token just chosen had less than ``threshold`` probability. Reads the scores
    ``generate`` passes (with ``output_scores``), which greedy decoding without logits processors, as here, leaves
    as the model's own."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        chosen = input_ids[:, -1:]
        probability = torch.softmax(scores[-1].float(), dim=-1).gather(1, chosen).squeeze(1)
        return probability < self.threshold


class _StopStrings:
    """Stops generation at the step whose text holds one of ``stops`` (decoding only what was generated)."""

    def __init__(self, tokenizer, prompt_length: int, stops: list[str]):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.stops = stops
        self.window = max(len(marker) for marker in stops) + 8  # tokens to decode: a token is at least a character

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = []
        for row in input_ids:
            tail = row[max(self.prompt_length, row.shape[0] - self.window):]
            text = self.tokenizer.decode(tail, skip_special_tokens=True)
            done.append(any(marker in text for marker in self.stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _CallbackStreamer:
    """A minimal streamer for ``generate``: decodes new tokens and hands the new text to a callback.

    With ``stops``, text that could begin a stop string is held back until it is known not to, and nothing from
    a stop string on is handed over: the streamed text is the reply's text."""

    def __init__(self, tokenizer, on_text: Callable[[str], None], stops: list[str] | None = None):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.stops = stops or []
        self.tokens: list[int] = []
        self.printed = 0
        self.skipped_prompt = False
        self.stopped = False

    def put(self, value) -> None:
        if not self.skipped_prompt:  # the first call carries the prompt
            self.skipped_prompt = True
            return
        self.tokens.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        self._show(text, final=False)

    def end(self) -> None:
        self._show(self.tokenizer.decode(self.tokens, skip_special_tokens=True), final=True)

    def _show(self, text: str, final: bool) -> None:
        if self.stopped:
            return
        if self.stops:
            cut = cut_at_stop(text, self.stops)
            if len(cut) < len(text):
                text, self.stopped = cut, True
            elif not final:
                text = text[: len(text) - _held_back(text, self.stops)]
        if len(text) > self.printed:
            self.on_text(text[self.printed :])
            self.printed = len(text)
