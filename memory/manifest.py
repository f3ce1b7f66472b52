"""What an adapter folder records about its training: ``lift_manifest.json``, one dataclass.

Absorption writes it; the registry reads it back through :meth:`Manifest.from_json`, which refuses a manifest
that lacks what the registry relies on. Fields the registry does not rely on have defaults, so a manifest from an
older version (or an adapter made by hand) still loads.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lift_tool.errors import CorruptAdapterError
from lift_tool.files import write_atomic

MANIFEST_FILE = "lift_manifest.json"
MANIFEST_FORMAT = 1
DOC_ID = re.compile(r"[0-9a-f]{64}")

# what the registry relies on, with the JSON types each may have
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "doc_id": str,
    "title": str,
    "tokens": int,
    "base_model": str,
    "base_fingerprint": str,
    "settings_fingerprint": str,
    "train_seconds": (int, float),
    "created": str,
}


def title_problem(title: object) -> str | None:
    """What makes ``title`` unfit to name a document, or None. Titles are printed in terminals and prompts:
    control characters (an ESC sequence, a newline) could rewrite what a user sees, and a lone surrogate cannot be
    written as UTF-8."""
    if not isinstance(title, str):
        return f"a title must be text, not {type(title).__name__}"
    if not title.strip():
        return "the title is empty"
    if any(unicodedata.category(ch) == "Cc" for ch in title):
        return "the title holds control characters (such as ESC or a line break)"
    try:
        title.encode("utf-8")
    except UnicodeEncodeError:
        return "the title holds characters that are not valid Unicode (a lone surrogate)"
    return None


@dataclass(frozen=True)
class Manifest:
    """One adapter's training record: the document, the base model, every setting and how training went."""

    doc_id: str
    title: str
    tokens: int
    base_model: str
    base_fingerprint: str
    settings_fingerprint: str
    train_seconds: float
    created: str
    chars: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    backend: str = ""
    device: str = ""
    precision: str = ""
    steps: int = 0
    planned_steps: int = 0
    stopped_by_budget: bool = False
    # The step an interrupted absorption was resumed at, from its last checkpoint (0: trained in one go).
    resumed_at_step: int = 0
    # The share of the document's sentences (of those its training plan teaches) that training reached: 1.0 for a
    # whole absorption, less where the time budget cut it short. None: recorded before this field existed.
    coverage: float | None = None
    tokens_trained: int = 0
    tokens_per_second: float = 0.0
    qa_pairs: int = 0
    unanswerable_pairs: int = 0
    losses: dict[str, Any] = field(default_factory=dict)
    lift_tool_version: str = ""
    format: int = MANIFEST_FORMAT

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Manifest":
        """The manifest in ``data``, or :class:`CorruptAdapterError` naming ``where`` and what is wrong."""

        def bad(problem: str) -> CorruptAdapterError:
            return CorruptAdapterError(f"the adapter in {where} has an invalid {MANIFEST_FILE} ({problem}): absorb the document again")

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        for name, kind in REQUIRED.items():
            if name not in data:
                raise bad(f"no {name!r}")
            if not isinstance(data[name], kind) or isinstance(data[name], bool):
                raise bad(f"{name!r} has the wrong type")
        if not DOC_ID.fullmatch(data["doc_id"]):
            raise bad("'doc_id' is not a sha256 hex digest")
        if title_problem(data["title"]):
            raise bad(title_problem(data["title"]))
        coverage = data.get("coverage")
        if coverage is not None and (isinstance(coverage, bool) or not isinstance(coverage, (int, float))
                                     or not 0 <= coverage <= 1):
            raise bad("'coverage' is not a share between 0 and 1")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})

    def write(self, folder: Path) -> None:
        write_atomic(Path(folder) / MANIFEST_FILE, json.dumps(self.to_json(), indent=2).encode("utf-8"))

    @classmethod
    def read(cls, folder: Path, where: str | None = None) -> "Manifest":
        """The manifest of an adapter folder; :class:`CorruptAdapterError` if it is missing or invalid."""
        path = Path(folder) / MANIFEST_FILE
        where = where or str(folder)
        if not path.is_file():
            raise CorruptAdapterError(f"the adapter in {where} has no {MANIFEST_FILE}: absorption must write it")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as err:
            raise CorruptAdapterError(f"the adapter in {where} has an unreadable {MANIFEST_FILE} ({err!r}): absorb the document again") from None
        return cls.from_json(data, where)
