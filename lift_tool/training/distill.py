"""Context distillation: the model with the passage in its prompt teaches the adapter, which answers without it.

Before LoRA is attached, the base model reads, for each answerable training question, the stretch of the
document that holds its answer, then the question, and is fed the gold answer token by token (teacher forcing).
At each answer token its ``TOP_K`` most likely next tokens and their log-probabilities are kept. Training then
adds to the cross-entropy of a closed-book answer ``training.distill`` times the divergence of the adapter's
distribution from the teacher's over those tokens (Knowledge Modules, arXiv 2503.08727; Cartridges, arXiv
2506.06266): the answer's hard tokens say what is right, the teacher's distribution also says what is nearly so.

The teacher teaches only where its likeliest token is the answer's own. With the passage in its prompt the
135M model starts most answers with "The" and goes on past a short answer's end (on the demo document it gave the
answer's first token 0.07 on average, and its likeliest token was the answer's at 76% of the positions); taught
everywhere, the adapter learnt that style instead of the facts (docs/recipe.md, step 11).

The questions of one stretch share its prompt: it runs once and its key-value cache serves each batch of
questions. The cost is one forward pass over every stretch and every question, without a backward pass, counted
in the absorption's time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lift_tool.generation import PrefixCache, cache_keyword

if TYPE_CHECKING:
    import torch

    from lift_tool.models import LoadedModel
    from lift_tool.training.questions import QAPair
    from lift_tool.training.tasks import TaskBuilder

TOP_K = 16  # teacher tokens kept per answer position
QUESTIONS_PER_BATCH = 16  # questions about one stretch read in one forward pass


@dataclass
class SoftTargets:
    """The teacher's view of one answer turn: the turn's labelled tokens; for each of them the teacher's ``TOP_K``
    likeliest tokens (``ids``) and their log-probabilities (``logprobs``), both ``[tokens, TOP_K]``; and where it
    teaches (``taught``, ``[tokens]``): the positions where its likeliest token is the answer's own."""

    tokens: list[int]
    ids: "torch.Tensor"
    logprobs: "torch.Tensor"
    taught: "torch.Tensor"


def teacher_targets(loaded: "LoadedModel", builder: "TaskBuilder") -> dict["QAPair", SoftTargets]:
    """Soft targets for each answerable question of ``builder`` whose evidence lies in one of its windows, read
    as ``builder`` writes a question with its window (the chat the adapter is trained on, with the passage)."""
    import torch

    tokenizer, model, pools = loaded.tokenizer, loaded.model, builder.pools
    by_window: dict[int, list["QAPair"]] = {}
    for pair in pools.answerable:
        if pair.sentence in pools.window_of_sentence:
            by_window.setdefault(pools.window_of_sentence[pair.sentence], []).append(pair)

    targets: dict["QAPair", SoftTargets] = {}
    prefixes = PrefixCache()  # each stretch is read once, its cache copied for each batch of questions
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for window, group in by_window.items():
                chats = []
                for pair in group:
                    chat = builder.conversation([pair], context=pools.windows[window], kind="teacher")
                    chats.append((pair, len(chat) - chat.target_tokens, chat.input_ids))  # the answer ends it
                fulls = [full for _, _, full in chats]
                shared = max(1, min(len(os.path.commonprefix(fulls)), min(start for _, start, _ in chats) - 1))
                chats.sort(key=lambda chat: len(chat[2]))  # batches of similar length: little padding
                for first in range(0, len(chats), QUESTIONS_PER_BATCH):
                    batch = chats[first : first + QUESTIONS_PER_BATCH]
                    cache = prefixes.lookup(model, "teacher", batch[0][2][:shared])
                    cache.batch_repeat_interleave(len(batch))
                    # Right-padded: a causal model's real tokens never see the padding after them.
                    width = max(len(full) for _, _, full in batch) - shared
                    rest = torch.full((len(batch), width), tokenizer.pad_token_id or 0, dtype=torch.long)
                    for row, (_, _, full) in enumerate(batch):
                        rest[row, : len(full) - shared] = torch.tensor(full[shared:])
                    hidden = model.get_decoder()(input_ids=rest.to(model.device),
                                                 **{cache_keyword(): cache}).last_hidden_state
                    for row, (pair, start, full) in enumerate(batch):
                        # The state at position p predicts token p + 1: the answer's tokens are full[start:]. The
                        # output layer runs on the answer's positions only.
                        answer_hidden = hidden[row, start - 1 - shared : len(full) - 1 - shared]
                        answer_logits = model.get_output_embeddings()(answer_hidden).float()
                        top = torch.log_softmax(answer_logits, dim=-1).topk(TOP_K, dim=-1)
                        ids = top.indices.cpu()
                        taught = ids[:, 0] == torch.tensor(full[start:])
                        targets[pair] = SoftTargets(full[start:], ids, top.values.cpu(), taught)
    finally:
        model.train(was_training)
    return targets


def distillation_loss(log_probs: "torch.Tensor", ids: "torch.Tensor", teacher_logprobs: "torch.Tensor") -> "torch.Tensor":
    """Per position, the divergence of the student (``log_probs``, over the whole vocabulary) from the teacher's
    distribution renormalised over its top tokens ``ids``: sum over them of p (log p - log q)."""
    teacher = teacher_logprobs.log_softmax(dim=-1)
    student = log_probs.gather(1, ids)
    return (teacher.exp() * (teacher - student)).sum(dim=-1)
