"""lift+rag sets aside an adapter answer that says the document does not tell, and answers from the retrieved
passages alone, as rag does. This script scores that rule on quality reports written before it: in each
results file given, every lift+rag row that kept such an adapter answer takes the rag row of the same question
(the answer lift+rag now gives: rag's prompt on the base model, greedy decoding, so the same text).

    python benchmarks/rescore_abstentions.py benchmarks/results/quality/smollm2-135m-squad.json.gz ...

Reads the rows files of bench_quality.py (.json.gz, or .json as older reports and lift eval's results.json are).
Prints one Markdown table row per file: lift+rag before and after, and rag for comparison. The results, on the
reports written before the rule, are in docs/recipe.md.
"""

from __future__ import annotations

import sys

from common import read_json

from lift_tool.eval import summarise  # noqa: E402
from lift_tool.prompts import is_abstention  # noqa: E402


def rescored(rows: list[dict]) -> tuple[list[dict], int]:
    """The lift+rag rows with kept abstentions replaced by the rag rows, and how many were replaced."""
    rag = {(r["doc_id"], r["index"]): r for r in rows if r["method"] == "rag"}
    new_rows, replaced = [], 0
    for row in rows:
        if row["method"] != "lift+rag":
            continue
        if row["mode_used"] == "lift+rag" and is_abstention(row["prediction"]):
            row = {**rag[(row["doc_id"], row["index"])], "method": "lift+rag", "mode_used": "rag"}
            replaced += 1
        new_rows.append(row)
    return new_rows, replaced


def main() -> None:
    print("| report | questions | abstentions set aside | lift+rag F1 before → after | score before → after "
          "| abstention on unanswerable before → after | rag F1 |")
    print("|---|---|---|---|---|---|---|")
    for name in sys.argv[1:]:
        rows = read_json(name)
        before = summarise([r for r in rows if r["method"] in {"lift+rag", "rag"}], {})
        new_rows, replaced = rescored(rows)
        after = summarise(new_rows, {})["lift+rag"]
        old, rag = before["lift+rag"], before["rag"]

        def pair(key):
            return "–" if old[key] is None else f"{old[key]:.1f} → {after[key]:.1f}"

        print(f"| {name} | {old['n']} | {replaced} | {pair('f1')} | {pair('score')} | {pair('abstention')} "
              f"| {rag['f1']:.1f} |")


if __name__ == "__main__":
    main()
