"""Chunking: a document cut into overlapping pieces of at most so many tokens, each an exact slice of its text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lift_tool.errors import ConfigError


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: ``text == document[start:end]``."""

    index: int
    start: int
    end: int
    text: str


def chunk_text(text: str, tokenizer: Any, chunk_tokens: int = 200, overlap: int = 50) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``chunk_tokens`` tokens that overlap by at most ``overlap`` tokens.

    ``tokenizer`` is a fast Hugging Face tokenizer (it must return character offsets). A chunk ends at the
    best boundary in the second half of its window (paragraph > sentence > word, the latest of equals) and the
    next chunk starts at the first sentence (else word) start inside the overlap, so chunks read as whole
    sentences where the text allows it. Each chunk is an exact slice of ``text``, without outer whitespace.
    """
    if chunk_tokens < 1:
        raise ConfigError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ConfigError(f"chunk overlap must be in [0, chunk_tokens={chunk_tokens}), got {overlap}")
    # verbose=False: a long document is longer than the model's limit on purpose; we cut it ourselves.
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    spans = [(s, e) for s, e in encoding["offset_mapping"] if e > s]
    n = len(spans)
    if n == 0:
        return []

    def boundary(j: int) -> int:
        """How good a cut between token j-1 and token j is: 3 paragraph, 2 sentence, 1 word, 0 inside a word."""
        gap = text[spans[j - 1][1] : spans[j][0]]
        if not gap:
            return 0  # "end" + "." or a word piece: never cut there if anything else is possible
        if gap.count("\n") >= 2:
            return 3
        before = text[max(0, spans[j - 1][1] - 3) : spans[j - 1][1]].rstrip("\"'”’)]")
        return 2 if before[-1:] in (".", "!", "?", "…") else 1

    chunks: list[Chunk] = []
    i = 0
    while True:
        if i + chunk_tokens >= n:
            cut = n
        else:
            window = range(i + max(1, chunk_tokens // 2), i + chunk_tokens + 1)
            cut = max(window, key=lambda j: (boundary(j), j))
        start, end = spans[i][0], spans[cut - 1][1]
        chunks.append(Chunk(len(chunks), start, end, text[start:end]))
        if cut == n:
            return chunks
        # Start the next chunk inside the overlap, at a sentence start if there is one, else a word start.
        lookback = range(max(i + 1, cut - overlap), cut)
        if lookback:
            i = min(lookback, key=lambda j: (-min(boundary(j), 2), j))
        else:
            i = cut
