"""A memory of 10,000 documents: how fast are listing, resolving, choosing and activating, and what does the
process hold?

Registers --documents documents, each with its text indexed for retrieval and a real LoRA adapter for the
default model (rank 1 on q_proj of the adapted layers, random weights: the registry and the pool handle it as
any adapter; nothing is trained), as absorption stores them (staging, manifest, add_adapter). Then, p50 and p95
over --repeats calls each:

  list          Lift.documents() (and `lift list --json` once, as a user runs it)
  resolve id    Lift.resolve(a 12-character id prefix) of a random document
  resolve title Lift.resolve(the exact title) of a random document
  choose        Lift.choose_documents(a question about a random document), retrieval over every chunk
  activate      the adapter pool (capacity 8) activating a random document's adapter

and the process's resident memory after each phase. Writes benchmarks/results/many_documents/many_documents.md
and .json. The registry is kept under ~/.cache/lift-tool/bench/many-documents (built once, reused).

    python benchmarks/bench_many_documents.py [--documents 10000] [--repeats 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import WORK, describe, header, machine_info, percentile, results_dir, started_at, write_json

WORDS = ("harbour lighthouse ferry archive foundry orchard mill chapel bridge market quarry school garden tower "
         "museum library brewery canal station theatre").split()


def rss_mib() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def text_for(i: int) -> tuple[str, str]:
    rng = random.Random(i)
    place = f"{rng.choice(WORDS).title()} {i}"
    year = 1700 + i % 300
    text = (f"The {place} was founded in {year} by the {rng.choice(WORDS)} guild of district {i % 97}. "
            f"Its keeper in the year {year + 50} was named Keeper{i}. It is known for its {rng.choice(WORDS)}. ") * 3
    return f"Record {i}: the {place}", text


def build(lift, count: int) -> float:
    """Register ``count`` documents (skipping what is there); seconds taken."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lift_tool.memory.manifest import Manifest  # noqa: F401 - the manifest is written as absorption writes it

    have = {entry.doc_id for entry in lift.documents()}
    if len(have) >= count:
        return 0.0
    loaded = lift.loaded
    layers = lift.settings.lora.model_copy(update={"layer_fraction": 0.5}).adapted_layers(
        loaded.model.config.num_hidden_layers)
    model = get_peft_model(loaded.model, LoraConfig(r=1, lora_alpha=2, target_modules=["q_proj"],
                                                    layers_to_transform=layers, init_lora_weights=False))
    started = time.perf_counter()
    for i in range(count):
        title, text = text_for(i)
        doc_id = lift.read(text).doc_id
        if doc_id in have:
            continue
        torch.manual_seed(i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.normal_(0.0, 0.02)
        lift.registry.add_document(doc_id, title, text, tokens=90, route="absorb")
        with lift.registry.staging() as folder:
            model.save_pretrained(folder)
            (folder / "lift_manifest.json").write_text(json.dumps({
                "doc_id": doc_id, "title": title, "tokens": 90, "base_model": loaded.name,
                "base_fingerprint": loaded.fingerprint, "settings_fingerprint": "bench-many", "train_seconds": 0.0,
                "created": "2026-12-06T00:00:00+00:00", "settings": {"rank": 1}, "losses": [], "backend": "peft"}))
            lift.registry.add_adapter(folder, text=text)
        lift.store.add_document(doc_id, title, text)
        if i % 500 == 0:
            print(f"{i} documents, {time.perf_counter() - started:.0f} s", flush=True)
    model.unload()
    return time.perf_counter() - started


def timed(repeats: int, call) -> dict:
    values = []
    for r in range(repeats):
        a = time.perf_counter()
        call(r)
        values.append(time.perf_counter() - a)
    return {"p50_ms": round(1000 * statistics.median(values), 2), "p95_ms": round(1000 * percentile(values, 0.95), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = started_at()
    began = time.perf_counter()
    info = machine_info()

    from lift_tool.config import Settings
    from lift_tool.lift import Lift

    home = WORK / f"many-documents-{args.documents}"
    lift = Lift(Settings(home=home))
    result = {"documents": args.documents, "machine": info, "rss_start_mib": rss_mib()}
    result["build_seconds"] = round(build(lift, args.documents), 1)
    lift = Lift(Settings(home=home), model=lift.loaded)  # a fresh memory object on the built folder
    result["rss_model_mib"] = rss_mib()
    rng = random.Random(0)
    picks = [rng.randrange(args.documents) for _ in range(args.repeats)]
    entries = {e.title: e for e in lift.documents()}
    rows = {}
    rows["list"] = timed(max(5, args.repeats // 20), lambda r: lift.documents())
    result["rss_after_list_mib"] = rss_mib()
    a = time.perf_counter()
    listed = subprocess.run([str(Path(sys.executable).parent / "lift"), "list", "--json", "--home", str(home)],
                            capture_output=True, text=True, check=True)
    rows["lift list --json (a new process)"] = {"p50_ms": round(1000 * (time.perf_counter() - a), 1), "p95_ms": None}
    assert len(json.loads(listed.stdout)) == args.documents
    rows["resolve id prefix"] = timed(args.repeats, lambda r: lift.resolve(entries[text_for(picks[r])[0]].doc_id[:12]))
    rows["resolve title"] = timed(args.repeats, lambda r: lift.resolve(text_for(picks[r])[0]))
    result["rss_after_resolve_mib"] = rss_mib()

    def choose(r: int) -> None:
        i = picks[r]
        found = lift.choose_documents(f"Who was the keeper of the {text_for(i)[0].split('the ', 1)[1]}?")
        right.append(bool(found) and found[0].title == text_for(i)[0])

    right: list[bool] = []
    lift.choose_documents("warm up")
    rows["choose by retrieval"] = timed(args.repeats, choose)
    result["choose_right_share"] = round(sum(right) / len(right), 3)
    result["rss_after_choose_mib"] = rss_mib()
    adapters = [lift.registry.adapter_for(entries[text_for(i)[0]].doc_id, lift.loaded.fingerprint) for i in picks]

    def activate(r: int) -> None:
        with lift.pool.activate(adapters[r]):
            pass

    rows["activate adapter (pool of 8)"] = timed(args.repeats, activate)
    result["rss_after_activate_mib"] = rss_mib()
    result["rows"] = rows

    def size_mib(path: Path) -> float:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        return round(sum(p.stat().st_size for p in files) / 2**20, 1)

    result["disk_mib"] = {"index (registry.sqlite)": size_mib(home / "registry.sqlite"),
                          "document texts": size_mib(home / "documents"), "adapters": size_mib(home / "adapters"),
                          "retrieval store (chroma)": size_mib(home / "chroma")}
    result["chunks"] = lift.store._collection().count()
    out = args.out or results_dir("many_documents")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "many_documents.json", result)
    lines = header(f"A memory of {args.documents:,} documents", started, describe(info),
                   (time.perf_counter() - began) / 60)
    lines += [f"Built in {result['build_seconds']} s (0 when the folder was there already). Questions choose the "
              f"right document first {100 * result['choose_right_share']:.0f}% of the time.", "",
              "| operation | p50 ms | p95 ms |", "|---|---|---|"]
    lines += [f"| {name} | {row['p50_ms']} | {row['p95_ms'] if row['p95_ms'] is not None else '-'} |"
              for name, row in rows.items()]
    lines += ["", f"On disk ({result['chunks']:,} retrieval chunks):", "", "| part | MiB |", "|---|---|"]
    lines += [f"| {name} | {mib} |" for name, mib in result["disk_mib"].items()]
    lines += ["", "| resident memory of the process | MiB |", "|---|---|"]
    lines += [f"| {key.removeprefix('rss_').removesuffix('_mib').replace('_', ' ')} | {value} |"
              for key, value in result.items() if key.startswith("rss_")]
    (out / "many_documents.md").write_text("\n".join(lines) + "\n")
    print((out / "many_documents.md").read_text())


if __name__ == "__main__":
    main()
