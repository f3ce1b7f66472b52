"""The demo's floors: closed-book accuracy with the adapter on the sample document, against no memory and the
document in the prompt, and the absorption time. Runs ``lift demo`` (``run_demo``) in a scratch memory and keeps
its whole output.

    python benchmarks/bench_demo.py [--label LABEL] [--out DIR]

Writes benchmarks/results/demo/demo.md (demo-LABEL.md with --label: a run kept beside the current one, for example
another seed: ``LIFT_TRAINING__SEED=1 python benchmarks/bench_demo.py --label seed1``). Floors: the adapter answers
at least 70% of the questions, at least 50 points more than no memory.
"""

from __future__ import annotations

import argparse
import io
import os
import re
from pathlib import Path

from common import command_line, header, machine, results_dir, started_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", help="write demo-LABEL.md: a run kept beside the current one")
    parser.add_argument("--out", type=Path, default=results_dir("demo"))
    args = parser.parse_args()

    from lift_tool.config import load_settings
    from lift_tool.demo import run_demo

    started = started_at()
    description = machine()
    output = io.StringIO()
    run_demo(load_settings(), out=output)
    text = output.getvalue()
    print(text)

    # The summary lines: "    adapter (LIFT)      13/16 right (81%), 0.30 s per question"
    percent = {label: int(value) for label, value in re.findall(r"^    (.+?)\s+\d+/\d+ right \((\d+)%\)", text, re.M)}
    lift, base = percent["adapter (LIFT)"], percent["no memory"]
    met = lift >= 70 and lift - base >= 50
    settings = " ".join(f"{key}={value}" for key, value in sorted(os.environ.items()) if key.startswith("LIFT_"))
    report = [
        *header("The demo: the sample document with and without memory", started, description,
                command=(f"{settings} " if settings else "") + command_line()),
        "Below: the output of `lift demo`.",
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
    name = "demo" + (f"-{args.label}" if args.label else "")
    (args.out / f"{name}.md").write_text("\n".join(report), encoding="utf-8")
    print(f"wrote {args.out / (name + '.md')}")


if __name__ == "__main__":
    main()
