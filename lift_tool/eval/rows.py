"""``rows.jsonl``: the resume log of an evaluation, one finished (document, question, method) row a line."""

from __future__ import annotations

import json
import os
from pathlib import Path


class RowLog:
    """Finished rows, one JSON line each, appended and flushed as they finish. A torn last line (the process
    killed mid-write) is ignored; a key written twice keeps its last row."""

    def __init__(self, path: Path):
        self.path = path
        self._rows: dict[tuple, dict] = {}
        if path.is_file():
            # Bytes, split on b"\n" only: a torn line may end mid-character, and text may hold other line breaks.
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # cut the torn line off, so the next row starts a line of its own
                data = data[: data.rfind(b"\n") + 1]
                with open(path, "r+b") as handle:
                    handle.truncate(len(data))
            for line in data.split(b"\n"):
                try:
                    row = json.loads(line)
                    self._rows[(row["doc_id"], row["index"], row["method"])] = row
                except (ValueError, KeyError, TypeError):  # ValueError covers bad JSON and bad UTF-8
                    continue

    @property
    def keys(self) -> set[tuple]:
        return set(self._rows)

    def append(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8", newline="\n") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._rows[(row["doc_id"], row["index"], row["method"])] = row

    def rows(self) -> list[dict]:
        return list(self._rows.values())
