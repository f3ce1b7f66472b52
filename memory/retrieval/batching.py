"""Batching: a list cut into consecutive batches (the embedder's forward passes, the store's writes)."""

from __future__ import annotations

from typing import Iterator


def batched(items: list, size: int) -> Iterator[list]:
    """``items`` in consecutive slices of ``size`` (the last one shorter), in order."""
    for b in range(0, len(items), size):
        yield items[b : b + size]
