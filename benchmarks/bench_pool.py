"""How fast and how lean is the adapter pool? Measured on the real default model.

Stores 20 rank-16 LoRA adapters (q, k, v, o, gate, up, down; random non-zero weights) in a throwaway registry,
then, each phase in a fresh process so that one phase's memory does not blur the next one's:

  capacity 20   load all 20 into the pool (time per load from disk, RSS per resident adapter), then 1,000
                random switches among them (time per switch, RSS over the run)
  capacity 8    the same 1,000 random switches with room for 8: most activations load from disk and evict
  PEFT baseline what plain PEFT costs for the same work (load_adapter, set_adapter with 8 resident), the reason
                the pool swaps tensors in a shared LoRA slot instead

Floors: median switch <= 10 ms, median load from disk <= 250 ms, no RSS growth over the switches.
Writes benchmarks/results/pool/pool.md and pool.json.

    python benchmarks/bench_pool.py [--model smollm2-135m] [--switches 1000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from common import command_line, describe, machine_info, results_dir, started_at, write_json

ADAPTERS = 20
RANK = 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SWITCH_FLOOR_MS = 10.0
LOAD_FLOOR_MS = 250.0


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def mib(n: float) -> float:
    return round(n / 2**20, 1)


def ms(seconds: list[float]) -> dict:
    values = sorted(s * 1000 for s in seconds)
    return {
        "n": len(values),
        "median": round(statistics.median(values), 2),
        "p90": round(values[int(0.9 * (len(values) - 1))], 2),
        "min": round(values[0], 2),
        "max": round(values[-1], 2),
    }


def load(spec: str, device: str, threads: int):
    import torch

    from lift_tool.config import Settings
    from lift_tool.models import load_model

    torch.set_num_threads(threads)
    return load_model(spec, Settings(device=device))


# ------------------------------------------------------------------------------------------------ phases


def build_adapters(home: str, spec: str, device: str, threads: int) -> dict:
    """Save ADAPTERS adapters into the registry, as absorption would (staging, manifest, add_adapter)."""
    import hashlib

    import torch
    from peft import LoraConfig, get_peft_model

    from lift_tool.memory.registry import Registry

    loaded = load(spec, device, threads)
    registry = Registry(Path(home))
    model = get_peft_model(loaded.model, LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=TARGETS))
    for i in range(ADAPTERS):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.normal_(0.0, 0.02)
        text = f"Benchmark document {i}. " * 200
        doc_id = hashlib.sha256(text.encode()).hexdigest()
        registry.add_document(doc_id, f"doc {i:02d}", text, tokens=1000, route="absorb")
        with registry.staging() as folder:
            model.save_pretrained(folder)
            manifest = {
                "doc_id": doc_id, "title": f"doc {i:02d}", "tokens": 1000, "base_model": loaded.name,
                "base_fingerprint": loaded.fingerprint, "settings_fingerprint": "bench", "train_seconds": 0.0,
                "created": datetime.now(timezone.utc).isoformat(), "settings": {"rank": RANK}, "losses": [],
                "backend": "peft",
            }
            (folder / "lift_manifest.json").write_text(json.dumps(manifest))
            entry = registry.add_adapter(folder)
    weights = entry.path / "adapter_model.safetensors"
    return {"fingerprint": loaded.fingerprint, "name": loaded.name, "file_bytes": weights.stat().st_size}


def run_pool(home: str, spec: str, device: str, threads: int, capacity: int, switches: int, seed: int) -> dict:
    """Fill a pool of ``capacity``, then switch at random among all adapters ``switches`` times."""
    import gc

    import torch

    from lift_tool.memory.pool import AdapterPool
    from lift_tool.memory.registry import Registry

    loaded = load(spec, device, threads)
    registry = Registry(Path(home))
    entries = [registry.adapter_for(doc.doc_id, loaded.fingerprint) for doc in registry.list_documents()]
    pool = AdapterPool(loaded.model, loaded.fingerprint, registry, capacity=capacity)
    prompt = loaded.tokenizer("The quick brown fox", return_tensors="pt").input_ids.to(loaded.model.device)

    def forward():
        with torch.no_grad():
            return loaded.model(input_ids=prompt).logits[0, -1]

    rss_loaded = rss()
    forward()  # the first forward pass allocates working memory of its own: keep it out of the adapter numbers
    gc.collect()
    rss_model = rss()
    started = time.perf_counter()
    with pool.activate(entries[0]):  # builds the LoRA layers into the model: once per LoRA configuration
        pass
    first_load = time.perf_counter() - started
    rss_first = rss()
    loads = []
    for entry in entries[1:capacity]:
        started = time.perf_counter()
        with pool.activate(entry):
            pass
        loads.append(time.perf_counter() - started)
    rss_full = rss()

    # Correctness spot check: adapters change the output, and the base model comes back exactly.
    with pool.base():
        base_logits = forward()
    with pool.activate(entries[0]):
        first_logits = forward()
    with pool.activate(entries[1]):
        second_logits = forward()
    with pool.base():
        base_again = forward()
    assert not torch.allclose(first_logits, second_logits) and not torch.allclose(first_logits, base_logits)
    assert torch.equal(base_logits, base_again)

    rng = random.Random(seed)
    hits, misses, trace = [], [], []
    rss_start = rss()
    for i in range(switches):
        entry = rng.choice(entries)
        resident = entry.key in pool.resident()
        started = time.perf_counter()
        with pool.activate(entry):
            pass
        (hits if resident else misses).append(time.perf_counter() - started)
        if i % 10 == 9:
            trace.append(rss())
    rss_end = rss()
    result = {
        "capacity": capacity,
        "first_load_ms": round(first_load * 1000, 1),
        "fill_loads_ms": ms(loads) if loads else None,
        "switch_ms": ms(hits) if hits else None,
        "evicting_loads_ms": ms(misses) if misses else None,
        "rss_loaded_mib": mib(rss_loaded),
        "rss_model_mib": mib(rss_model),
        "rss_after_first_mib": mib(rss_first),
        "rss_full_mib": mib(rss_full),
        "rss_per_adapter_mib": mib((rss_full - rss_first) / max(1, len(loads))),
        "tensor_bytes_per_adapter_mib": mib(pool.resident_bytes() / len(pool.resident())),
        "rss_switches_mib": {"start": mib(rss_start), "end": mib(rss_end), "max": mib(max(trace + [rss_start]))},
        "rss_trace_mib": [mib(x) for x in trace[:: max(1, len(trace) // 20)]],
        "switches": switches,
        "hits": len(hits),
        "misses": len(misses),
    }
    return result


def peft_baseline(home: str, spec: str, device: str, threads: int, count: int = 8) -> dict:
    """Plain PEFT on the same adapters: load_adapter one after another, then set_adapter among them."""
    import warnings

    from peft import PeftModel

    from lift_tool.memory.registry import Registry

    warnings.simplefilter("ignore")
    loaded = load(spec, device, threads)
    registry = Registry(Path(home))
    entries = [registry.adapter_for(doc.doc_id, loaded.fingerprint) for doc in registry.list_documents()][:count]
    started = time.perf_counter()
    model = PeftModel.from_pretrained(loaded.model, str(entries[0].path), adapter_name=entries[0].key)
    loads = [time.perf_counter() - started]
    for entry in entries[1:]:
        started = time.perf_counter()
        model.load_adapter(str(entry.path), adapter_name=entry.key)
        loads.append(time.perf_counter() - started)
    rng = random.Random(0)
    switches = []
    for _ in range(50):
        started = time.perf_counter()
        model.set_adapter(rng.choice(entries).key)
        switches.append(time.perf_counter() - started)
    started = time.perf_counter()
    model.delete_adapter(entries[-1].key)
    delete = time.perf_counter() - started
    return {
        "resident": count,
        "load_adapter_ms_each": [round(s * 1000, 1) for s in loads],
        "set_adapter_ms": ms(switches),
        "delete_adapter_ms": round(delete * 1000, 1),
    }


def in_fresh_process(function, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as executor:
        return executor.submit(function, *args).result()


# ------------------------------------------------------------------------------------------------ report


def verdicts(results: dict) -> dict:
    cap20, cap8 = results["capacity_20"], results["capacity_8"]
    adapter_mib = cap20["tensor_bytes_per_adapter_mib"]
    return {
        "switch_median_le_10ms": cap20["switch_ms"]["median"] <= SWITCH_FLOOR_MS,
        "load_median_le_250ms": cap20["fill_loads_ms"]["median"] <= LOAD_FLOOR_MS
        and cap8["evicting_loads_ms"]["median"] <= LOAD_FLOOR_MS,
        # "No growth": over 1,000 switches RSS ends within one adapter's size of where it started.
        "no_rss_growth_capacity_20": cap20["rss_switches_mib"]["end"] - cap20["rss_switches_mib"]["start"] <= adapter_mib,
        "no_rss_growth_capacity_8": cap8["rss_switches_mib"]["end"] - cap8["rss_switches_mib"]["start"] <= adapter_mib,
    }


def markdown(results: dict) -> str:
    m, cap20, cap8, peft = results["machine"], results["capacity_20"], results["capacity_8"], results["peft_baseline"]
    ok = results["verdicts"]
    mark = lambda passed: "yes" if passed else "**NO**"  # noqa: E731
    lines = [
        "# Adapter pool: switch and load times, memory",
        "",
        f"Command: `{results['command']}` (from the repository root), {results['date']}, {results['total_s']:.0f} s in all.",
        "",
        f"Machine: {describe({**m, 'torch_threads': results['threads']})}; device {results['device']}.",
        "",
        f"Model: {results['model_name']} (`{results['model']}`). {ADAPTERS} adapters of rank {RANK} on "
        f"{', '.join(TARGETS)}, random non-zero weights; {mib(results['file_bytes'])} MiB per adapter file.",
        "",
        "## Against the floors",
        "",
        "| measure | result | floor | met |",
        "|---|---|---|---|",
        f"| switch between resident adapters, median (capacity 20, {cap20['hits']} switches) | "
        f"{cap20['switch_ms']['median']} ms (p90 {cap20['switch_ms']['p90']}) | <= {SWITCH_FLOOR_MS:.0f} ms | {mark(ok['switch_median_le_10ms'])} |",
        f"| load from disk into the pool, median ({cap20['fill_loads_ms']['n']} loads, no eviction) | "
        f"{cap20['fill_loads_ms']['median']} ms (p90 {cap20['fill_loads_ms']['p90']}) | <= {LOAD_FLOOR_MS:.0f} ms | {mark(ok['load_median_le_250ms'])} |",
        f"| load from disk with eviction, median (capacity 8, {cap8['misses']} loads) | "
        f"{cap8['evicting_loads_ms']['median']} ms (p90 {cap8['evicting_loads_ms']['p90']}) | <= {LOAD_FLOOR_MS:.0f} ms | {mark(ok['load_median_le_250ms'])} |",
        f"| RSS over {cap20['switches']} switches, capacity 20: start / end / max | "
        f"{cap20['rss_switches_mib']['start']} / {cap20['rss_switches_mib']['end']} / {cap20['rss_switches_mib']['max']} MiB | no growth | {mark(ok['no_rss_growth_capacity_20'])} |",
        f"| RSS over {cap8['switches']} switches, capacity 8: start / end / max | "
        f"{cap8['rss_switches_mib']['start']} / {cap8['rss_switches_mib']['end']} / {cap8['rss_switches_mib']['max']} MiB | no growth | {mark(ok['no_rss_growth_capacity_8'])} |",
        "",
        "\"No growth\" means RSS ends within one adapter's size of where the switches started.",
        "",
        "## Memory",
        "",
        "| | MiB |",
        "|---|---|",
        f"| process with the model loaded | {cap20['rss_loaded_mib']} |",
        f"| after one forward pass on the base model (its working memory), before any adapter | {cap20['rss_model_mib']} |",
        f"| after the first adapter (also builds the LoRA layers into the model) | {cap20['rss_after_first_mib']} |",
        f"| with all {ADAPTERS} resident | {cap20['rss_full_mib']} |",
        f"| RSS per further resident adapter | {cap20['rss_per_adapter_mib']} |",
        f"| adapter weights per resident adapter (tensor bytes) | {cap20['tensor_bytes_per_adapter_mib']} |",
        "",
        f"RSS sampled every 10 switches, capacity 20: {cap20['rss_trace_mib']}",
        "",
        f"RSS sampled every 10 switches, capacity 8: {cap8['rss_trace_mib']}",
        "",
        "## Times",
        "",
        "| | median ms | p90 | min | max | n |",
        "|---|---|---|---|---|---|",
    ]
    for label, stats in (
        ("switch, capacity 20", cap20["switch_ms"]),
        ("switch, capacity 8 (hits)", cap8["switch_ms"]),
        ("load from disk, capacity 20 (filling)", cap20["fill_loads_ms"]),
        ("load from disk + evict, capacity 8", cap8["evicting_loads_ms"]),
    ):
        lines.append(f"| {label} | {stats['median']} | {stats['p90']} | {stats['min']} | {stats['max']} | {stats['n']} |")
    lines += [
        "",
        f"The first load in a process takes {cap20['first_load_ms']} ms: it builds the LoRA layers into the model "
        "(PEFT `get_peft_model`), once per LoRA configuration. Later loads read and checksum the file and point the "
        "layers at the new tensors.",
        "",
        "## Why the pool does not call load_adapter / set_adapter per document",
        "",
        f"Plain PEFT on the same adapters, {peft['resident']} loaded one after another:",
        "",
        f"- `load_adapter`, ms each as more are resident: {peft['load_adapter_ms_each']}",
        f"- `set_adapter` with {peft['resident']} resident: median {peft['set_adapter_ms']['median']} ms (p90 {peft['set_adapter_ms']['p90']})",
        f"- `delete_adapter`: {peft['delete_adapter_ms']} ms",
        "",
        "Each of these walks every module of the model and every resident adapter, so they grow with the number "
        "of resident adapters. The pool keeps one PEFT adapter (a slot) per LoRA configuration and points its "
        "parameters at the resident adapter's tensors instead (see memory/pool.py).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=results_dir("pool"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--switches", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args()

    started = time.perf_counter()
    results: dict = {
        "command": command_line(),
        "date": started_at(),
        "model": args.model,
        "device": args.device,
        "threads": args.threads,
        "machine": machine_info(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as home:
        common = (home, args.model, args.device, args.threads)
        print(f"building {ADAPTERS} adapters ...", flush=True)
        built = in_fresh_process(build_adapters, *common)
        results.update(model_name=built["name"], fingerprint=built["fingerprint"], file_bytes=built["file_bytes"])
        if hasattr(os, "sync"):
            os.sync()  # the build's disk writes should not land in the load timings
        for capacity in (20, 8):
            print(f"capacity {capacity}: {args.switches} switches ...", flush=True)
            results[f"capacity_{capacity}"] = in_fresh_process(run_pool, *common, capacity, args.switches, 1)
        print("PEFT baseline ...", flush=True)
        results["peft_baseline"] = in_fresh_process(peft_baseline, *common)
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["verdicts"] = verdicts(results)

    write_json(args.out / "pool.json", results)
    (args.out / "pool.md").write_text(markdown(results))
    print(markdown(results))
    if not all(results["verdicts"].values()):
        print("some floors were missed: see above", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
