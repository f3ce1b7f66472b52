"""Absorption on a Ray cluster: documents absorbed per hour with 1 and 2 workers on this machine, the driver's
commit time, and the projection for N machines.

For each worker count W, starts a local Ray head (`ray start --head --num-cpus W` on 127.0.0.1), absorbs
--documents documents of --tokens tokens each (consecutive parts of the longest LooGLE article, the default model
and recipe, no budget) with `Lift.absorb_many` (one job per document, one CPU per job), and stops the head. Each
run starts from an empty memory. The driver's commit (staging, checksums, index row, retrieval index) is timed
apart, on copies of one adapter. The projection: machines x workers per machine x documents per worker-hour,
until the driver's commits (one at a time per registry) are the limit.

Writes benchmarks/results/cluster/cluster.md and cluster.json.

    python benchmarks/bench_cluster.py [--documents 4] [--tokens 400] [--workers 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (cut_to_tokens, describe, free_port, header, longest_loogle_document, machine_info, results_dir,
                    started_at, write_json)

RAY = Path(sys.executable).parent / "ray"


def documents(tokenizer, count: int, tokens: int) -> list[str]:
    """``count`` consecutive parts of about ``tokens`` tokens of the longest LooGLE article."""
    _, text, _ = longest_loogle_document()
    parts = []
    for _ in range(count):
        part = cut_to_tokens(tokenizer, text, tokens)
        parts.append(part)
        text = text[len(part):].lstrip()
    return parts


def run(workers: int, texts: list[str], model) -> dict:
    from lift_tool.config import Settings
    from lift_tool.lift import AbsorbResult, Lift

    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    home = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                    str(workers), "--include-dashboard=false", "--object-store-memory", str(300 * 2**20),
                    "--temp-dir", str(temp)], check=True, env=env, capture_output=True)
    try:
        lift = Lift(Settings(home=home, cluster={"address": f"127.0.0.1:{port}"}), model=model)
        started = time.perf_counter()
        results = lift.absorb_many(texts)
        wall = time.perf_counter() - started
        import ray

        ray.shutdown()
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)
    failed = [str(r) for r in results if not isinstance(r, AbsorbResult)]
    train = [r.adapter.manifest.train_seconds for r in results if isinstance(r, AbsorbResult)]
    steps = [r.adapter.manifest.steps for r in results if isinstance(r, AbsorbResult)]
    shutil.rmtree(home, ignore_errors=True)
    return {"workers": workers, "documents": len(texts), "failed": failed, "wall_seconds": round(wall, 1),
            "documents_per_hour": round(3600 * (len(texts) - len(failed)) / wall, 1),
            "train_seconds_median": round(statistics.median(train), 1) if train else None,
            "steps_median": statistics.median(steps) if steps else None}


def commit_seconds(model, text: str, repeats: int = 10) -> float:
    """Median seconds the driver takes to commit a returned adapter: staging, checksums, index row, retrieval index."""
    from lift_tool.config import Settings
    from lift_tool.lift import Lift

    home = Path(tempfile.mkdtemp(prefix="bench-commit-"))
    lift = Lift(Settings(home=home), model=model)
    source = lift.absorb(text, budget_seconds=5, progress=False).adapter
    times = []
    for i in range(repeats):
        variant = f"{text}\n\nCopy {i}."
        doc_id = lift.read(variant).doc_id
        started = time.perf_counter()
        lift.registry.add_document(doc_id, f"copy {i}", variant, tokens=source.tokens, route="absorb")
        with lift.registry.staging() as folder:
            for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
                shutil.copy2(source.path / name, folder / name)
            manifest = dataclasses.replace(source.manifest, doc_id=doc_id, title=f"copy {i}")
            manifest.write(folder)
            lift.registry.add_adapter(folder, text=variant)
        lift.store.add_document(doc_id, f"copy {i}", variant)
        times.append(time.perf_counter() - started)
    shutil.rmtree(home, ignore_errors=True)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = started_at()
    began = time.perf_counter()
    info = machine_info()

    from lift_tool.config import Settings
    from lift_tool.models import load_model

    model = load_model(settings=Settings())  # the driver's copy: tokenizer and fingerprint
    texts = documents(model.tokenizer, args.documents, args.tokens)
    runs = []
    for workers in args.workers:
        runs.append(run(workers, texts, model))
        print(runs[-1], flush=True)
    commit = commit_seconds(model, texts[0])
    per_worker = max(r["documents_per_hour"] / r["workers"] for r in runs)
    commit_limit = 3600 / commit
    result = {"machine": info, "started": started, "tokens_per_document": args.tokens, "runs": runs,
              "commit_seconds_median": round(commit, 3), "documents_per_worker_hour": round(per_worker, 1),
              "driver_commit_limit_per_hour": round(commit_limit)}
    out = args.out or results_dir("cluster")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "cluster.json", result)
    lines = header("Absorption on a Ray cluster", started, describe(info), (time.perf_counter() - began) / 60)
    lines += [f"{args.documents} documents of about {args.tokens} tokens (parts of the longest LooGLE article), the "
              "default model and recipe, one CPU (one thread) per job.", "",
              "| workers | documents | wall s | documents/hour | train s per document (median) | steps (median) | failed |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['documents']} | {r['wall_seconds']} | {r['documents_per_hour']} | "
              f"{r['train_seconds_median']} | {r['steps_median']} | {len(r['failed'])} |" for r in runs]
    lines += ["", f"The driver commits a returned adapter in {1000 * commit:.0f} ms (median of 10: staging, "
              f"checksums, index row, retrieval index), so one driver commits at most {commit_limit:,.0f} "
              "documents an hour.", "", "Projection (documents of this size, this CPU's speed per worker):", "",
              "| machines x workers | documents/hour |", "|---|---|"]
    for machines, workers in ((1, 2), (4, 2), (16, 2), (16, 16), (64, 16)):
        rate = min(machines * workers * per_worker, commit_limit)
        lines.append(f"| {machines} x {workers} | {rate:,.0f}{' (the driver is the limit)' if rate == commit_limit else ''} |")
    (out / "cluster.md").write_text("\n".join(lines) + "\n")
    print((out / "cluster.md").read_text())


if __name__ == "__main__":
    main()
