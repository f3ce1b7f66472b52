"""The adapter registry: a SQLite index plus plain PEFT adapter folders, kept in step.

Everything lives under one home directory (``layout``: ``registry.sqlite``, ``documents/``, ``adapters/``,
``staging/``). How it stays consistent:

- Writers (adding, removing, repairing) hold ``registry.lock``, a file lock, so the index and the folders change
  together even when several processes share one home. Readers only use SQLite, which in WAL mode never blocks
  them (``index``).
- Adds write files first and the index last; removals change the index first and the files after (``commit``). A
  crash at any point therefore leaves at worst a folder or a text file that no row mentions (``gc()`` removes it,
  ``maintenance``), never a row that points at nothing.
- An adapter's key is content-addressed (document, base model, training settings), so absorbing the same text
  again with the same model and settings finds the stored adapter instead of training a new one (``entries``).
- Every adapter's files are checked against checksums recorded when it was stored before it is loaded
  (``integrity``); one document's memory travels as a checked archive (``archives``).

Only the standard library is imported at module level; ``filelock`` and ``safetensors`` are imported where used.
"""

from lift_tool.memory.registry.entries import SHORT_ID, AdapterEntry, DocumentEntry, adapter_key
from lift_tool.memory.registry.integrity import CHECKSUMS_FILE, CONFIG_FILE, REQUIRED_FILES, WEIGHTS_FILE
from lift_tool.memory.registry.maintenance import VerifyReport
from lift_tool.memory.registry.registry import Registry

__all__ = [
    "CHECKSUMS_FILE",
    "CONFIG_FILE",
    "REQUIRED_FILES",
    "SHORT_ID",
    "WEIGHTS_FILE",
    "AdapterEntry",
    "DocumentEntry",
    "Registry",
    "VerifyReport",
    "adapter_key",
]
