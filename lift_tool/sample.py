"""The bundled sample document and its questions (``lift_tool/data``).

``harrowmere.md`` is about 2,000 tokens of invented facts, so no model can know them in advance;
``harrowmere_questions.json`` holds questions about it, written by hand and never trained on. The demo answers
them, and the absorption speed is measured on the document.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path


def sample_document_path() -> Path:
    return Path(str(resources.files("lift_tool") / "data" / "harrowmere.md"))


def sample_questions() -> list[dict]:
    """The sample's questions: ``{"question": ..., "answers": [accepted answers, ...]}``."""
    path = resources.files("lift_tool") / "data" / "harrowmere_questions.json"
    return json.loads(path.read_text(encoding="utf-8"))["questions"]


__all__ = ["sample_document_path", "sample_questions"]
