"""Answers through a vLLM server (`lift serve`) against answers in this process: the same answers, and how fast
with many adapters and concurrent clients.

1. Equality: the bundled document absorbed (budget --budget-seconds), its 16 questions answered greedily in
   adapter mode (lift) and lift+rag mode, in process and through the server: how many answers (text and mode)
   are the same. Floor: 15 of 16 in each mode.
2. Many adapters: --adapters distinct adapters in the registry (the absorbed one and copies with every LoRA
   tensor scaled by its own random factor in [0.5, 1.5]: the real shapes, distinct weights), registered with the
   server (time per registration). Requests are the demo questions in adapter mode, each naming a random adapter
   (or always the same one), sent from 1, 4 and 16 concurrent clients, streamed: p50/p95 time to first token,
   p50 time to the whole answer, answers per second. The in-process pool (capacity 8, LRU from disk) answers the
   same requests from 1 and 4 threads (it answers one at a time).

Writes benchmarks/results/served/served.md and served.json.

    python benchmarks/bench_served.py [--adapters 200] [--requests 48] [--budget-seconds 60] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import (command_line, describe, free_port, header, machine_info, percentile, results_dir, started_at,
                    write_json)

CLIENTS = (1, 4, 16)
POOL_CLIENTS = (1, 4)


def summary(ttft: list[float], total: list[float], wall: float) -> dict:
    return {"requests": len(total), "ttft_p50_ms": round(1000 * statistics.median(ttft)),
            "ttft_p95_ms": round(1000 * percentile(ttft, 0.95)), "answer_p50_ms": round(1000 * statistics.median(total)),
            "answers_per_s": round(len(total) / wall, 2)}


def copy_adapters(lift, source, count: int) -> list:
    """``count - 1`` variants of ``source`` (an AdapterEntry) stored in the registry as documents of their own."""
    import torch
    from safetensors.torch import load_file, save_file

    registry = lift.registry
    tensors = load_file(source.path / "adapter_model.safetensors")
    manifest = json.loads((source.path / "lift_manifest.json").read_text())
    rng = random.Random(0)
    entries = [source]
    for i in range(1, count):
        text = f"Variant {i} of the benchmark document. " * 40
        doc_id = lift.read(text).doc_id
        registry.add_document(doc_id, f"variant {i:03d}", text, tokens=400, route="absorb")
        with registry.staging() as folder:
            scaled = {name: (t * rng.uniform(0.5, 1.5)).to(torch.float32).contiguous() for name, t in tensors.items()}
            save_file(scaled, folder / "adapter_model.safetensors")
            (folder / "adapter_config.json").write_bytes((source.path / "adapter_config.json").read_bytes())
            (folder / "lift_manifest.json").write_text(json.dumps({**manifest, "doc_id": doc_id,
                                                                   "title": f"variant {i:03d}"}))
            entries.append(registry.add_adapter(folder, text=text))
    return entries


def stream_completion(url: str, model: str, prompt_ids: list[int], max_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, seconds to the whole answer) of one streamed greedy completion."""
    body = json.dumps({"model": model, "prompt": prompt_ids, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    first = None
    with urllib.request.urlopen(request, timeout=600) as reply:
        for line in reply:
            if line.startswith(b"data: ") and b"[DONE]" not in line and first is None:
                if json.loads(line[6:])["choices"][0].get("text"):
                    first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def run_clients(clients: int, jobs: list, work) -> tuple[list[float], list[float], float]:
    """Run ``work(job)`` -> (ttft, total) over ``jobs`` from ``clients`` threads; the timings and the wall time."""
    ttft, total, lock = [], [], threading.Lock()
    queue = list(jobs)

    def client():
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop()
            first, whole = work(job)
            with lock:
                ttft.append(first)
                total.append(whole)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ttft, total, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=int, default=200)
    parser.add_argument("--requests", type=int, default=48, help="requests per configuration")
    parser.add_argument("--budget-seconds", type=float, default=60.0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = started_at()
    began = time.perf_counter()
    info = machine_info()

    from lift_tool.config import Settings
    from lift_tool.lift import Lift
    from lift_tool.prompts import messages, render
    from lift_tool.sample import sample_document_path, sample_questions

    out = args.out or results_dir("served")
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="bench-served-"))
    local = Lift(Settings(home=home))
    absorbed = local.absorb(sample_document_path(), budget_seconds=args.budget_seconds, progress=False)
    doc, title = absorbed.document.doc_id, absorbed.document.title
    built = time.perf_counter()
    entries = copy_adapters(local, absorbed.adapter, args.adapters)
    build_seconds = time.perf_counter() - built

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "lift"), "serve", "--port", str(port), "--home",
                               str(home)], stdout=open(home / "vllm.log", "wb"), stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)
    result: dict = {"machine": info, "started": started, "command": command_line(), "adapters": args.adapters,
                    "budget_seconds": args.budget_seconds, "max_new_tokens": args.max_new_tokens}
    try:
        t0 = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - t0 > 900:
                    raise SystemExit(f"vLLM did not start: see {home / 'vllm.log'}")
                time.sleep(1)
        result["server_start_seconds"] = round(time.perf_counter() - t0, 1)
        served = Lift(Settings(home=home, server={"url": url}), model=local.loaded)

        # 1. equality
        equality = {}
        for mode in ("lift", "lift+rag"):
            rows = []
            for item in sample_questions():
                a = time.perf_counter()
                here = local.ask(item["question"], documents=[doc], mode=mode)
                b = time.perf_counter()
                there = served.ask(item["question"], documents=[doc], mode=mode)
                c = time.perf_counter()
                rows.append({"question": item["question"], "in_process": here.text, "in_process_mode": here.mode,
                             "served": there.text, "served_mode": there.mode, "same": (here.text, here.mode) ==
                             (there.text, there.mode), "in_process_s": round(b - a, 2), "served_s": round(c - b, 2)})
            equality[mode] = {"same": sum(r["same"] for r in rows), "of": len(rows), "rows": rows,
                              "in_process_p50_s": statistics.median(r["in_process_s"] for r in rows),
                              "served_p50_s": statistics.median(r["served_s"] for r in rows)}
            print(mode, equality[mode]["same"], "of", len(rows), flush=True)
        result["equality"] = equality

        # 2. many adapters
        vllm = served.generator.server
        registration = []
        for entry in entries:
            a = time.perf_counter()
            vllm.load_adapter(entry)
            registration.append(time.perf_counter() - a)
        result["registration_ms_p50"] = round(1000 * statistics.median(registration), 1)
        result["registration_ms_p95"] = round(1000 * percentile(registration, 0.95), 1)
        tokenizer = local.loaded.tokenizer
        prompts = [tokenizer(render(tokenizer, messages(q["question"], [title], None), True),
                             add_special_tokens=False)["input_ids"] for q in sample_questions()]
        rng = random.Random(1)
        latency = {}
        for choice in ("random", "one"):
            for clients in CLIENTS:
                jobs = [(rng.choice(entries) if choice == "random" else entries[0], rng.choice(prompts))
                        for _ in range(args.requests)]
                ttft, total, wall = run_clients(clients, jobs, lambda job: stream_completion(
                    url, job[0].key, job[1], args.max_new_tokens))
                latency[f"vllm {choice} adapter, {clients} clients"] = summary(ttft, total, wall)
                print(choice, clients, latency[f"vllm {choice} adapter, {clients} clients"], flush=True)
        questions = [q["question"] for q in sample_questions()]
        for clients in POOL_CLIENTS:
            jobs = [(rng.choice(entries), rng.choice(questions)) for _ in range(args.requests)]

            def ask_here(job):
                first = []
                a = time.perf_counter()
                local.ask(job[1], documents=[job[0].doc_id], mode="lift", max_new_tokens=args.max_new_tokens,
                          on_text=lambda text: first or first.append(time.perf_counter() - a))
                whole = time.perf_counter() - a
                return (first[0] if first else whole), whole

            ttft, total, wall = run_clients(clients, jobs, ask_here)
            latency[f"in-process pool, random adapter, {clients} clients"] = summary(ttft, total, wall)
            print("pool", clients, latency[f"in-process pool, random adapter, {clients} clients"], flush=True)
        result["latency"] = latency
    finally:
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    result["build_seconds"] = round(build_seconds, 1)
    write_json(out / "served.json", result)

    lines = header("Answers through a vLLM server against answers in process", started, describe(info),
                   (time.perf_counter() - began) / 60)
    lines += [f"vLLM (vllm-cpu in .venv-serve) started in {result['server_start_seconds']} s; {args.adapters} adapters "
              f"built in {result['build_seconds']} s; registration with the server p50 {result['registration_ms_p50']} "
              f"ms, p95 {result['registration_ms_p95']} ms.", "", "## Same answers (16 demo questions, greedy)", "",
              "| mode | same answers | in process, p50 s | vLLM, p50 s |", "|---|---|---|---|"]
    for mode, row in result["equality"].items():
        lines.append(f"| {mode} | {row['same']} of {row['of']} | {row['in_process_p50_s']} | {row['served_p50_s']} |")
    lines += ["", f"## Many adapters ({args.requests} requests per row, answers up to {args.max_new_tokens} tokens)", "",
              "| requests | TTFT p50 ms | TTFT p95 ms | answer p50 ms | answers/s |", "|---|---|---|---|---|"]
    for name, row in result["latency"].items():
        lines.append(f"| {name} | {row['ttft_p50_ms']} | {row['ttft_p95_ms']} | {row['answer_p50_ms']} | "
                     f"{row['answers_per_s']} |")
    (out / "served.md").write_text("\n".join(lines) + "\n")
    print((out / "served.md").read_text())


if __name__ == "__main__":
    main()
