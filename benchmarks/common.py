"""What the benchmarks share: where the data, the reports and the work folders live, the machine a report was
measured on, the report header, model names in file names, JSON files (gzip for per-row data), the documents the
absorption benchmarks cut, and reopening a finished ``bench_quality.py`` run.

Every script imports this as a sibling module (``from common import machine``): Python puts the folder of the
script it runs first on ``sys.path``, so ``python benchmarks/bench_x.py`` finds it from any working directory.
lift_tool is installed in the virtual environment (``pip install -e .``), so no script touches ``sys.path``.

Nothing heavy is imported at module level; torch and lift_tool are imported inside the functions that use them.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import platform
import re
import shlex
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model and dataset is local; never wait on the hub

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"  # read in place, never copied into the repository (see SOURCES.md there)
DEV_SET = DATA / "longdoc_qa_dev.jsonl"  # 3 SQuAD v2.0 dev and 3 QuALITY articles
LOOGLE = DATA / "loogle"  # shortdep_qa.jsonl, longdep_qa.jsonl: 5 articles each
RESULTS = REPO / "benchmarks" / "results"  # one folder per benchmark, the current report only
WORK = Path.home() / ".cache" / "lift-tool" / "bench"  # long runs' memory and rows, outside the repository
DEFAULT_MODEL = "smollm2-135m"

TIMING_NOTE = ("Timings depend on what else runs on the machine: the load average at the start is recorded with the "
               "machine, and a load near the core count means another job shared the CPU.")

# The question sets of bench_quality.py: name -> (file, document id pattern, questions per document)
QUALITY_SETS = {
    "squad": (DEV_SET, "squad2dev_*", 40),
    "quality": (DEV_SET, "leval_quality_*", None),
    "loogle-short": (LOOGLE / "shortdep_qa.jsonl", None, None),
    "loogle-long": (LOOGLE / "longdep_qa.jsonl", None, None),
}


# ------------------------------------------------------------------------------------------- names and paths


def results_dir(benchmark: str) -> Path:
    """``benchmarks/results/BENCHMARK``: the folder of a benchmark's current report (its default ``--out``)."""
    return RESULTS / benchmark


def model_tag(spec: str) -> str:
    """A model spec as a file-name part: the bundled name, or a folder's / file's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(spec).name if "/" in spec else spec)


def absorb_home(spec: str) -> Path:
    """Where bench_absorb.py keeps its absorbed documents, so that bench_questions.py reuses them."""
    return WORK / f"absorb-{model_tag(spec)}"


# ------------------------------------------------------------------------------------------------ the machine

# The instructions that decide the CPU's number formats: with avx512_bf16 or amx_bf16 lift-tool trains and
# answers in bf16 on the CPU (about 4x faster absorption); without them, in float32.
CPU_FEATURES = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 ``flags``, Arm ``Features``); empty where unknown."""
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def instruction_set(flags: set[str] | None = None) -> str:
    """``avx512_bf16 no, amx_bf16 no, avx512f no, avx2 yes``: which of CPU_FEATURES the CPU has."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return "instruction set unknown (no flags in /proc/cpuinfo)"
    return ", ".join(f"{name} {'yes' if name in flags else 'no'}" for name in CPU_FEATURES)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, OSError, ValueError):
        return None


def machine_info() -> dict:
    """The machine a report is measured on, as data (kept in the report's JSON)."""
    import torch

    flags = cpu_flags()
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "instructions": {name: name in flags for name in CPU_FEATURES} if flags else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "torch_threads": torch.get_num_threads(),
        "os": platform.platform(),
    }


def describe(info: dict) -> str:
    """``machine_info()`` in one line, as reports print it."""
    instructions = info.get("instructions")
    flags = {name for name, present in instructions.items() if present} if instructions else set()
    memory = f", {info['memory_gib']} GiB" if info.get("memory_gib") else ""
    gpu = f"GPU {info['gpu']}" if info.get("gpu") else "no GPU"
    return (f"{info['cpu']}, {info['cores']} cores{memory}, {gpu}; {instruction_set(flags)}; load average at start "
            f"{info.get('load_average')}; Python {info['python']}, torch {info['torch']}, transformers "
            f"{info['transformers']}, peft {info['peft']}; {info['torch_threads']} torch threads")


def machine() -> str:
    """The machine in one line: CPU, cores, memory, GPU, instruction set, load average, versions, threads."""
    return describe(machine_info())


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` lie (the nearest rank; 0.5 is near the median)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server a benchmark starts."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------ the report


def started_at() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran this script, as typed from the repository root."""
    argv = sys.argv if argv is None else argv
    return shlex.join(["python", f"benchmarks/{Path(argv[0]).name}", *argv[1:]])


def lift_environment() -> dict[str, str]:
    """The LIFT_* settings this script runs with."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("LIFT_")}


def with_environment(command: str, environment: dict[str, str]) -> str:
    """``command`` after the settings it ran with, as one types them."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in environment.items()), command])


def command_with_environment() -> str:
    """The command that ran this script, after the LIFT_* settings it ran with."""
    return with_environment(command_line(), lift_environment())


def header(title: str, started: str, description: str, minutes: float | None = None,
           command: str | None = None) -> list[str]:
    """A report's first lines: title, command, when and how long, the machine and the timing note."""
    took = f", {minutes:.1f} min" if minutes is not None else ""
    return [f"# {title}", "", f"Command: `{command or command_line()}` (from the repository root), {started}{took}.",
            "", f"Machine: {description}.", "", TIMING_NOTE, ""]


def write_report(out: Path, name: str, lines: list[str], results: list, started: str, on_machine: str) -> None:
    """A benchmark's report ``name.md`` (``lines``) and its data ``name.json`` (the results, when they started, the
    machine and the command) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", {"results": results, "started": started, "machine": on_machine,
                                      "command": command_line()})
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / f'{name}.md'}", file=sys.stderr)


def write_json(path: Path, data) -> Path:
    """``data`` as JSON into ``path``; a name ending in ``.gz`` is gzip-compressed (per-row data, which runs to
    hundreds of KB), with no time stamp inside, so the same rows give the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_json(path: Path):
    """JSON from ``path``, gzip-compressed or not; ``x.json`` also finds ``x.json.gz`` and the other way round."""
    path = Path(path)
    if path.suffix == ".gz":
        candidates = [path, path.with_suffix("")]
    else:
        candidates = [path, path.with_name(path.name + ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            raw = candidate.read_bytes()
            return json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    raise FileNotFoundError(f"no {path} (nor the same with or without .gz)")


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it, nested dictionaries merged key by key."""
    result = dict(base)
    for key, value in overrides.items():
        result[key] = merged(result.get(key, {}), value) if isinstance(value, dict) else value
    return result


# ------------------------------------------------------------------------ the documents of the length benchmarks


def longest_loogle_document(data: Path = DATA) -> tuple[str, str, list[dict]]:
    """(title, text, qa pairs) of the longest LooGLE document on disk, with its short-dependency questions."""
    best = None
    for name in ("shortdep_qa.jsonl", "longdep_qa.jsonl"):
        for line in (data / "loogle" / name).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if best is None or len(record["input"]) > len(best["input"]):
                best = record
    pairs = ast.literal_eval(best["qa_pairs"]) if isinstance(best["qa_pairs"], str) else best["qa_pairs"]
    return best["title"], best["input"], pairs


def cut_to_tokens(tokenizer, text: str, tokens: int) -> str:
    """The longest prefix of ``text`` that ends at a sentence boundary and has at most ``tokens`` tokens."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(encoded["input_ids"]) <= tokens:
        raise SystemExit(f"the source text has only {len(encoded['input_ids']):,} tokens, fewer than {tokens:,}")
    limit = encoded["offset_mapping"][tokens][0]  # first character past the token budget
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]?(?=\s)", text[:limit])]
    return text[: ends[-1]] if ends else text[:limit]


# ------------------------------------------------------------------------------- reopening a bench_quality run


def quality_work_dir(work: Path, model: str, name: str, settings) -> Path:
    """One folder per model, set, training recipe and number format: a change of the defaults starts a fresh run."""
    from lift_tool.eval import answer_dtype

    return work / f"quality-{model_tag(model)}-{name}-{settings.training_fingerprint()[:8]}-{answer_dtype(settings)}"


def find_work_folder(work: Path, model: str, name: str) -> Path:
    """The bench_quality work folder of this model and set for the current recipe and number format."""
    from lift_tool.config import load_settings

    folder = quality_work_dir(work, model, name, load_settings(model=model))
    if not (folder / "results.json").is_file():
        sys.exit(f"no finished run in {folder}: run "
                 f"`python benchmarks/bench_quality.py --model {model} --sets {name}` first")
    return folder


def open_run(folder: Path, name: str, **retrieval) -> tuple:
    """What a finished run left: a Lift on its memory, with the run's model, window and answer length (and the
    ``retrieval`` settings given changed), its documents.json, its questions by (doc_id, index), and its rag rows."""
    from lift_tool.config import load_settings
    from lift_tool.eval import load_dataset
    from lift_tool.lift import Lift

    run = json.loads((folder / "run.json").read_text())
    given = {"model": run["model"], "context_window": run["context_window"], "max_new_tokens": run["max_new_tokens"]}
    settings = load_settings(**{key: value for key, value in given.items() if value is not None})
    changed = settings.retrieval.model_copy(update=retrieval)
    lift = Lift(settings.model_copy(update={"home": folder / "memory", "retrieval": changed}))
    documents = json.loads((folder / "documents.json").read_text())
    questions = {(d.doc_id, q.index): q for d in load_dataset(QUALITY_SETS[name][0]) for q in d.questions}
    rag_rows = [row for row in json.loads((folder / "results.json").read_text()) if row["method"] == "rag"]
    return lift, documents, questions, rag_rows
