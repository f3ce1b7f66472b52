"""Text normalisation, document ids, and token-level segmentation with overlap."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass


def normalise_text(text: str) -> str:
    """The canonical form of a document: the same text always gets the same id.

    Unicode NFC, Unix newlines, no trailing spaces on lines, at most one blank line in a row, no leading or
    trailing blank space.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def document_id(text: str) -> str:
    """sha256 of the normalised text (hex)."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Segment:
    index: int
    start: int  # first token (inclusive) in the document's token list
    end: int  # last token (exclusive)
    overlap: int  # leading tokens shared with the previous segment

    @property
    def length(self) -> int:
        return self.end - self.start


def segment_tokens(n_tokens: int, length: int, stride: int) -> list[Segment]:
    """Cover ``n_tokens`` with windows of ``length`` tokens that start every ``stride`` tokens.

    The last window is shifted back so it ends exactly at the end of the document (never a stub of a few
    tokens); consecutive windows share ``length - stride`` tokens, which gives every cut some context.
    """
    if length <= 0 or stride <= 0 or stride > length:
        raise ValueError("need 0 < stride <= length")
    if n_tokens <= length:
        return [Segment(0, 0, n_tokens, 0)] if n_tokens else []
    starts = list(range(0, n_tokens - length, stride)) + [n_tokens - length]
    segments = []
    for index, start in enumerate(starts):
        previous_end = segments[-1].end if segments else start
        segments.append(Segment(index, start, start + length, max(0, previous_end - start)))
    return segments
