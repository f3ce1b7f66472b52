"""Draw a quality report's figure again from its rows, without running anything: after a change to the figure.

    python benchmarks/replot_quality.py benchmarks/results/quality/smollm2-135m-squad.json.gz

Reads MODEL-SET.json.gz (every question, method and score) and the absorption seconds of each document from the
report beside it (MODEL-SET.md, its Documents table), and writes MODEL-SET.png with ``lift eval``'s plot code.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lift_tool.eval.plot import plot  # noqa: E402
from lift_tool.eval.report import summarise  # noqa: E402


def absorption_seconds(report: Path) -> dict[str, dict]:
    """document -> {"train_seconds": ...} from the report's Documents table."""
    documents: dict[str, dict] = {}
    lines = report.read_text(encoding="utf-8").splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| document |")), None)
    if header is None:
        return documents
    columns = [cell.strip() for cell in lines[header].strip("|").split("|")]
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|"))))
        seconds = re.sub(r"[^0-9.]", "", cells.get("absorption s", ""))
        documents[cells["document"]] = {"train_seconds": float(seconds) if seconds else 0.0}
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path, help="a MODEL-SET.json.gz of benchmarks/results/quality/")
    args = parser.parse_args()
    stem = args.rows.name.removesuffix(".json.gz")
    with gzip.open(args.rows, "rt", encoding="utf-8") as handle:
        rows = json.load(handle)
    documents = absorption_seconds(args.rows.with_name(f"{stem}.md"))
    title = f"{stem}: {len({(r['doc_id'], r['index']) for r in rows})} questions, {len(documents)} documents"
    out = args.rows.with_name(f"{stem}.png")
    plot(summarise(rows, documents), out, title=title, rows=rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
