"""The key that ties a checkpoint to its training plan (the resuming itself is tested in test_absorb and test_lift)."""

from lift_tool.training.checkpoint import plan_key
from lift_tool.training.distill import TOP_K, SoftTargets
from lift_tool.training.tasks import IGNORE, Example


def _plan(logprob: float = -0.5, answer: int = 42):
    import torch

    soft = SoftTargets(tokens=[answer], ids=torch.tensor([[answer] * TOP_K]),
                       logprobs=torch.full((1, TOP_K), logprob, dtype=torch.bfloat16), taught=torch.tensor([True]))
    example = Example("closed_book", [1, 2, answer], [IGNORE, IGNORE, answer], teacher=[(0, soft)])
    return [[example], [Example("segment", [5, 6, 7], [IGNORE, 6, 7])]]


def test_the_key_changes_with_anything_that_changes_the_training():
    key = plan_key("model", "settings", "fp32", "cpu", _plan(), 1)
    assert key == plan_key("model", "settings", "fp32", "cpu", _plan(), 1)
    assert len({key,
                plan_key("other model", "settings", "fp32", "cpu", _plan(), 1),
                plan_key("model", "other settings", "fp32", "cpu", _plan(), 1),
                plan_key("model", "settings", "bf16", "cpu", _plan(), 1),
                plan_key("model", "settings", "fp32", "cpu", _plan(), 2),
                plan_key("model", "settings", "fp32", "cpu", _plan(answer=43), 1),
                plan_key("model", "settings", "fp32", "cpu", _plan(logprob=-0.25), 1),  # the teacher's (bf16) values
                plan_key("model", "settings", "fp32", "cpu", list(reversed(_plan())), 1)}) == 8
