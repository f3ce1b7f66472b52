"""Reciprocal rank fusion: several rankings of the same items merged into one."""

from __future__ import annotations

# The usual reciprocal-rank-fusion constant: an item at rank r adds 1 / (RRF_K + r).
RRF_K = 60


def fuse_rankings(*rankings: list[str]) -> list[str]:
    """Reciprocal rank fusion: each ranking gives its item at rank r (from 1) 1 / (RRF_K + r); best sum first."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, 1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused, key=lambda key: -fused[key])
