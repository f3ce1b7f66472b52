"""What the registry hands out: a stored adapter, a known document, and the content address of an adapter."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from lift_tool.memory.manifest import Manifest

SHORT_ID = 12  # how many hex characters lists and messages show


def adapter_key(doc_id: str, base_fingerprint: str, settings_fingerprint: str) -> str:
    """The content address of an adapter: the same text, base model and settings give the same key."""
    blob = f"{doc_id}|{base_fingerprint}|{settings_fingerprint}".encode()
    return hashlib.sha256(blob).hexdigest()[:24]


@dataclass
class AdapterEntry:
    """One stored adapter: a row of the index plus where its folder is."""

    key: str
    doc_id: str
    title: str
    tokens: int
    base_model: str
    base_fingerprint: str
    settings_fingerprint: str
    created: str
    size_bytes: int
    train_seconds: float
    path: Path
    manifest: Manifest = field(repr=False)


@dataclass
class DocumentEntry:
    """One known document, with the adapters absorbed from it (none for retrieval-only or in-context ones)."""

    doc_id: str
    title: str
    tokens: int
    created: str
    route: str  # "absorb", "retrieve", "context", ...
    adapters: list[AdapterEntry] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.doc_id[:SHORT_ID]

    @property
    def base_models(self) -> list[str]:
        return sorted({adapter.base_model for adapter in self.adapters})

    @property
    def size_bytes(self) -> int:
        return sum(adapter.size_bytes for adapter in self.adapters)

    @property
    def train_seconds(self) -> float:
        return sum(adapter.train_seconds for adapter in self.adapters)

    @property
    def coverage(self) -> float | None:
        """The largest share of the document an adapter of it covered (its manifest's ``coverage``); None when no
        adapter recorded one."""
        shares = [adapter.manifest.coverage for adapter in self.adapters if adapter.manifest.coverage is not None]
        return max(shares) if shares else None
