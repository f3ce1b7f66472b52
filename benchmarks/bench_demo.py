"""The demo's floors: closed-book accuracy with the adapter on the sample document, against no memory and the
document in the prompt, and the absorption time. Runs ``lift demo`` (lift_tool.demo.run_demo) in a scratch
memory and keeps its whole output.

    python benchmarks/bench_demo.py [--out benchmarks/results]

Writes benchmarks/results/demo.md. Floors: the adapter answers at least 70% of the questions, at least 50
points more than no memory.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_absorb import machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    from lift_tool.config import load_settings
    from lift_tool.demo import run_demo

    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    output = io.StringIO()
    run_demo(load_settings(), out=output)
    text = output.getvalue()
    print(text)

    # The summary lines: "    adapter (LIFT)      13/16 right (81%), 0.30 s per question"
    percent = {label: int(value) for label, value in re.findall(r"^    (.+?)\s+\d+/\d+ right \((\d+)%\)", text, re.M)}
    lift, base = percent["adapter (LIFT)"], percent["no memory"]
    met = lift >= 70 and lift - base >= 50
    report = [
        "# The demo: the sample document with and without memory",
        "",
        f"Command: `python benchmarks/bench_demo.py` (the output of `lift demo`), {started}.",
        "",
        f"Machine: {machine()}.",
        "",
        f"Floors: adapter >= 70% of the questions and >= 50 points above no memory: adapter {lift}%, no memory "
        f"{base}%: **{'met' if met else 'not met'}**.",
        "",
        "```",
        text.rstrip(),
        "```",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.md").write_text("\n".join(report), encoding="utf-8")


if __name__ == "__main__":
    main()
