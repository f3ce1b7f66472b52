"""Keyword search: texts ranked by the question's rarer words (Okapi BM25).

The small embedding model often ranks the passage that shares the question's names and dates below passages
that are only about the same topic; shared words find it (benchmarks/results/retrieval/retrieval.md).
"""

from __future__ import annotations

import math
import re
from collections import Counter

_WORD = re.compile(r"\w+")
# Words that every question has and that say nothing about which passage answers it.
_STOPWORDS = frozenset(
    "a an and are as at be been by did do does for from had has have he her his how in is it its of on or she "
    "that the their them they this to was were what when where which who whom whose why with".split()
)


def keyword_ranking(question: str, texts: dict[str, str], k1: float = 1.5, b: float = 0.75) -> list[str]:
    """The keys of ``texts`` that share a word with ``question``, best first by Okapi BM25 (``k1``, ``b``: its
    usual constants). Words are lower-cased runs of letters and digits; common question words do not count."""
    query = set(_WORD.findall(question.lower())) - _STOPWORDS
    counts = {key: Counter(_WORD.findall(text.lower())) for key, text in texts.items()}
    if not query or not counts:
        return []
    average_length = sum(sum(c.values()) for c in counts.values()) / len(counts) or 1.0
    containing = Counter(word for c in counts.values() for word in query if word in c)
    scores = {}
    for key, count in counts.items():
        length_factor = k1 * (1 - b + b * sum(count.values()) / average_length)
        score = 0.0
        for word in query:
            if word in count:
                rarity = math.log(1 + (len(counts) - containing[word] + 0.5) / (containing[word] + 0.5))
                score += rarity * count[word] * (k1 + 1) / (count[word] + length_factor)
        if score > 0:
            scores[key] = score
    return sorted(scores, key=lambda key: -scores[key])
