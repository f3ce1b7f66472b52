"""The frozen layers below the adapter, run once per training example instead of once per pass.

With LoRA on the upper layers only (the default on small models), the layers below the lowest adapted one have
nothing to train, and an example that comes round again (the closed-book conversations repeat every pass when
``regroup_questions`` is off; segments repeat when a short document is trained over several epochs) enters them
with the same tokens: their output is the same as the last time. The first time an example is seen,
the whole body runs and the hidden state entering the lowest adapted layer is kept; after that only the adapted
layers run, starting from it. The result is exact, not an approximation: nothing that training changes reaches
those layers. It saves their forward pass (the backward pass stops at the lowest adapted layer anyway), and costs
``tokens × hidden size`` numbers of memory per repeated example, within a settable limit.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch

    from lift_tool.training.tasks import Example


class FrozenLayerCache:
    """The hidden states entering layer ``first_adapted`` of ``body``, for the examples the plan repeats."""

    def __init__(self, body, first_adapted: int, micro_batches: list[list["Example"]], max_bytes: int):
        self.body = body
        self.first_adapted = first_adapted
        self.max_bytes = max_bytes
        counts = Counter(id(example) for batch in micro_batches for example in batch)
        self.repeated = {key for key, count in counts.items() if count > 1}
        self.stored: dict[int, "torch.Tensor"] = {}
        self.stored_bytes = 0
        self.hits = 0

    @staticmethod
    def applies(body, first_adapted: int) -> bool:
        """Whether ``body`` is a decoder whose lower layers can be skipped: a list of ``layers`` of one attention
        kind (a per-layer kind would be looked up by position, which skipping shifts), and something below the
        lowest adapted layer to skip."""
        config = getattr(body, "config", None)
        layers = getattr(body, "layers", None)
        kinds = set(getattr(config, "layer_types", None) or ["one"])
        return first_adapted > 0 and layers is not None and len(kinds) == 1

    def hidden(self, batch: list["Example"], input_ids: "torch.Tensor", attention: "torch.Tensor") -> "torch.Tensor":
        """The body's last hidden state for a right-padded micro-batch, skipping the frozen layers when every
        example of the batch has been seen before."""
        import torch

        if all(id(example) in self.stored for example in batch):
            self.hits += len(batch)
            first = self.stored[id(batch[0])]
            entering = torch.zeros((len(batch), input_ids.shape[1], first.shape[-1]), dtype=first.dtype,
                                   device=first.device)
            for row, example in enumerate(batch):
                entering[row, : len(example)] = self.stored[id(example)]
            with _upper_layers_only(self.body, self.first_adapted):
                return self.body(inputs_embeds=entering, attention_mask=attention).last_hidden_state
        output = self.body(input_ids=input_ids, attention_mask=attention, output_hidden_states=True)
        entering = output.hidden_states[self.first_adapted].detach()
        for row, example in enumerate(batch):
            key = id(example)
            size = len(example) * entering.shape[-1] * entering.element_size()
            if key in self.repeated and key not in self.stored and self.stored_bytes + size <= self.max_bytes:
                self.stored[key] = entering[row, : len(example)].clone()
                self.stored_bytes += size
        return output.last_hidden_state


@contextmanager
def _upper_layers_only(body, first_adapted: int) -> Iterator[None]:
    """``body`` with its layer list cut to the adapted layers, for one forward pass from their input."""
    import torch

    layers = body.layers
    body.layers = torch.nn.ModuleList(list(layers)[first_adapted:])
    try:
        yield
    finally:
        body.layers = layers
