"""GPU absorption, PEFT against Unsloth: time from document to first answer, training tokens/s, peak GPU memory.

For each model shape and backend, in a fresh process (so one backend's patches and memory never blur the
other's), it loads a randomly initialised model of a real shape, absorbs one warm-up document (reported as the
cold start: CUDA warm-up, Unsloth's import and compilation), then documents of 1k, 2k, 4k and 8k tokens, and
after each asks one question with the adapter (``Lift.ask(mode="lift")``, 16 new tokens). Timed from the
document to the answer's last token: synthetic-task generation, the backend's setup (Unsloth reloads its own
copy of the model), training, saving, storing in the registry, loading the adapter onto the answering model and
generating. Peak GPU memory is ``torch.cuda.max_memory_allocated`` over that span; the resident answering model
is part of it.

Shapes (speed does not depend on the weights' values, so they are random):
  1b  Llama-3.2-1B: hidden 2048, MLP 8192, 16 layers, 32 heads, 8 KV heads, vocab 128,256, tied embeddings,
      RoPE theta 500,000 with llama3 scaling
  8b  Llama-3-8B: hidden 4096, MLP 14,336, 32 layers, 32 heads, 8 KV heads, vocab 128,256, RoPE theta 500,000
  tiny  2 layers, hidden 64 (the --dry-run shape)
The vocabulary is Llama 3's size, so the output layer and embeddings cost what they really cost, but the
tokenizer is the bundled SmolLM2 one (49,152 tokens; there is no Llama 3 tokenizer without the hub): its ids
index the first rows of the embedding, and document lengths are counted in SmolLM2 tokens (English text takes
about 10-15 % more of them than of Llama 3's).

Correctness (``--correctness-model``, the bundled default model): absorbs the sample document with the chosen
backend, answers the demo questions with the trained model still in memory, then loads the saved adapter with
plain transformers + PEFT in a process that never imports Unsloth and answers again; also checks that the
adapter is plain PEFT (file names, tensor names and shapes as PEFT makes them, no embedding weights). It also
records the answers the product path gives (the adapter loaded onto the resident model by the adapter pool).

Not included: retrieval indexing (``lift absorb`` also embeds the text into Chroma; neither chromadb nor the
embedding model is on the GPU machine), and loading the base model (done once, before the first document).

Writes gpu_absorb.md and gpu_absorb.json into --out (default benchmarks/results/gpu_absorb/; merged with what an
earlier run wrote there, so the shapes can be measured in separate calls).

    python benchmarks/bench_gpu_absorb.py --dry-run     # CPU, tiny shape, PEFT only: checks the plumbing

On the lent GPU machine (no internet and no hub; at most 64 MiB carried per call): the wheels to carry (Unsloth,
lift-tool itself, what the machine's image lacks), the files, and the command of every call are in
benchmarks/results/gpu_absorb/PENDING.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common import REPO, cpu_name, instruction_set, results_dir

os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")

LLAMA3_ROPE_1B = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
SHAPES = {
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, tie_word_embeddings=True, max_position_embeddings=131072,
               rope_parameters=LLAMA3_ROPE_1B, rms_norm_eps=1e-5),
    "8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=False, max_position_embeddings=8192,
               rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, rms_norm_eps=1e-5),
    "tiny": dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, max_position_embeddings=2048,
                 rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, rms_norm_eps=1e-5),
}
GOALS_SECONDS = {("8b", 8192): 10.0, ("1b", 8192): 3.0}  # document to first answer, from the issue
QUESTION = "What is the main subject of the document?"
SPEED_ANSWER_TOKENS = 16  # a short factual answer; random weights would otherwise run to the full limit
SEED = 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# =========================================================================================== child processes


def child_build(spec: dict) -> dict:
    """Save a randomly initialised model of ``spec['shape']`` with the bundled tokenizer into ``spec['folder']``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lift_tool.models import FINGERPRINT_FILE

    folder, shape = Path(spec["folder"]), spec["shape"]
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    config = LlamaConfig(**SHAPES[shape], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(SEED)
    started = time.monotonic()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # initialise on the GPU: an 8B model initialised on 16 CPU cores takes minutes
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    # Random weights are fingerprinted by shape and seed; hashing 16 GB of them at every load would only cost time.
    (staging / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": f"llama-random-{shape}-seed{SEED}"}))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    params = sum(p.numel() for p in model.parameters())
    return {"shape": shape, "parameters": params, "seconds": round(time.monotonic() - started, 1)}


@contextlib.contextmanager
def instrumented_backends(before_detach=None):
    """Time each backend's attach, save and detach inside ``absorb`` (which picks its backend itself), and let
    ``before_detach`` use the trained model while it still exists."""
    import lift_tool.training.absorb as absorb_module

    timings: dict[str, float] = {}
    original = absorb_module.make_backend

    class Timed:
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def attach(self, loaded, settings):
            started = time.monotonic()
            model = self.inner.attach(loaded, settings)
            timings["attach"] = time.monotonic() - started
            save = model.save_pretrained

            def timed_save(*args, **kwargs):
                began = time.monotonic()
                result = save(*args, **kwargs)
                timings["save"] = time.monotonic() - began
                return result

            model.save_pretrained = timed_save
            return model

        def detach(self, peft_model, loaded):
            if before_detach is not None:
                before_detach(peft_model, self.name)
            started = time.monotonic()
            self.inner.detach(peft_model, loaded)
            timings["detach"] = time.monotonic() - started

    absorb_module.make_backend = lambda name: Timed(original(name))
    try:
        yield timings
    finally:
        absorb_module.make_backend = original


class NoRetrievalIndex:
    """Stands in for the Chroma store: retrieval indexing is outside this measurement (see the docstring)."""

    def add_document(self, doc_id, title, text):
        return None


def make_lift(spec: dict, home: Path):
    from lift_tool.config import load_settings
    from lift_tool.lift import Lift
    from lift_tool.models import load_model

    training = dict(spec.get("training") or {})
    settings = load_settings(model=spec["model"], device=spec["device"], backend=spec["backend"], home=home,
                             training=training)
    loaded = load_model(settings=settings)
    lift = Lift(settings, model=loaded)
    lift._store = NoRetrievalIndex()
    return lift


def greedy_ids(model, tokenizer, question: str, title: str, max_new_tokens: int) -> list[int]:
    """The token ids ``lift_tool.generation.answer`` would decode: compared as ids, so that two empty or
    undecodable answers (a random model's) do not count as the same by accident."""
    import torch

    from lift_tool.generation import _stop_ids
    from lift_tool.prompts import messages, render

    prompt = render(tokenizer, messages(question, [title], None), add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=_stop_ids(tokenizer))
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def next_token_logprobs(model, tokenizer, question: str, title: str):
    """Log-probabilities of the answer's first token, computed the way the training loop runs the model
    (transformer body, then the output layer): a measure that does not saturate the way greedy text can."""
    import torch

    from lift_tool.prompts import messages, render

    prompt = render(tokenizer, messages(question, [title], None), add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    causal_lm = model.get_base_model()
    with torch.inference_mode():
        hidden = causal_lm.base_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                      use_cache=False)  # a plain forward pass, also on Unsloth's inference path
        logits = causal_lm.get_output_embeddings()(hidden.last_hidden_state[:, -1]).float()
    return torch.log_softmax(logits[0], dim=-1).cpu()


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def gpu_memory() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def reset_gpu_peak() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return round(torch.cuda.memory_allocated() / 2**30, 2)


def absorb_and_ask(lift, document, question: str, answer_tokens: int) -> dict:
    """One document, timed from the text to the first answer's last token."""
    from lift_tool.training.recipe import generate_qa
    from lift_tool.training.tasks import TaskBuilder

    # Synthetic-task generation on its own (absorb repeats it), to see whether overlapping it with training
    # could matter.
    began = time.monotonic()
    pairs = generate_qa(document, lift.settings)
    TaskBuilder(lift.loaded.tokenizer, document.text, document.title, lift.settings.training, pairs)
    tasks_seconds = time.monotonic() - began

    resident_gib = reset_gpu_peak()
    with instrumented_backends() as timings:
        started = time.monotonic()
        result = lift.absorb(document, progress=False, force=True)
        absorbed = time.monotonic()
    reply = lift.ask(question, [result.document.doc_id], mode="lift", max_new_tokens=answer_tokens)
    finished = time.monotonic()
    manifest = result.adapter.manifest
    loop_seconds = manifest.tokens_trained / max(manifest.tokens_per_second, 1e-9)
    row = {
        "doc_tokens": manifest.tokens,
        "tokens_trained": manifest.tokens_trained,
        "steps": manifest.steps,
        "stopped_by_budget": manifest.stopped_by_budget,
        "tasks_s": round(tasks_seconds, 3),
        "attach_s": round(timings.get("attach", 0.0), 2),
        "train_s": round(loop_seconds, 2),
        "save_s": round(timings.get("save", 0.0), 2),
        "detach_s": round(timings.get("detach", 0.0), 2),
        "absorb_s": round(absorbed - started, 2),
        "answer_s": round(finished - absorbed, 2),
        "total_s": round(finished - started, 2),
        "train_tokens_per_s": manifest.tokens_per_second,
        "final_loss": manifest.losses["final"],
        "precision": manifest.precision,
        "backend_used": manifest.backend,
        "answer": reply.text[:80],
        "resident_gib": resident_gib,
    }
    row.update(gpu_memory())
    return row


def child_speed(spec: dict) -> dict:
    from lift_tool.documents import make_document

    home = Path(tempfile.mkdtemp(prefix="lift-bench-home-"))
    try:
        lift = make_lift(spec, home)
        log(f"{spec['shape']}/{spec['backend']}: model loaded on {lift.loaded.device}")
        rows = []
        warm_text, texts = spec["warmup"], spec["documents"]
        cold = absorb_and_ask(lift, make_document(warm_text["text"], title=warm_text["title"]), QUESTION,
                              spec["answer_tokens"])
        log(f"{spec['shape']}/{spec['backend']}: cold start {cold['total_s']} s")
        for item in texts:
            row = absorb_and_ask(lift, make_document(item["text"], title=item["title"]), QUESTION, spec["answer_tokens"])
            rows.append(row)
            log(f"{spec['shape']}/{spec['backend']}: {row['doc_tokens']} tokens -> answer in {row['total_s']} s "
                f"({row['train_tokens_per_s']:.0f} training tokens/s, peak {row.get('peak_gib', '-')} GiB)")
            partial = {"cold": cold, "rows": rows, "settings": spec["settings_note"]}
            Path(spec["partial"]).write_text(json.dumps(partial))  # survives a timeout
        return {"cold": cold, "rows": rows, "settings": spec["settings_note"]}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def child_correctness(spec: dict) -> dict:
    """Absorb the sample document; answers from the trained model in memory and through the adapter pool."""
    home = Path(tempfile.mkdtemp(prefix="lift-bench-home-"))
    try:
        return correctness_in(home, spec)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def correctness_in(home: Path, spec: dict) -> dict:
    from safetensors.torch import save_file

    from lift_tool.sample import sample_document_path, sample_questions
    from lift_tool.documents import read_document

    lift = make_lift(spec, home)
    document = read_document(sample_document_path())
    questions = [q["question"] for q in sample_questions()][: spec.get("questions")]
    tokenizer, max_new = lift.loaded.tokenizer, lift.settings.max_new_tokens
    in_memory: list[list[int]] = []

    def answer_with_trained(peft_model, backend_name):
        if backend_name == "unsloth":
            from unsloth import FastLanguageModel

            FastLanguageModel.for_inference(peft_model)
        peft_model.eval()
        logprobs = {f"q{i}": next_token_logprobs(peft_model, tokenizer, q, document.title) for i, q in enumerate(questions)}
        save_file(logprobs, spec["logprobs_out"])
        for question in questions:
            in_memory.append(greedy_ids(peft_model, tokenizer, question, document.title, max_new))

    with instrumented_backends(before_detach=answer_with_trained):
        result = lift.absorb(document, progress=False, force=True)
    pool = [lift.ask(q, [result.document.doc_id], mode="lift").text for q in questions]
    adapter_dir = Path(spec["adapter_out"])
    shutil.rmtree(adapter_dir, ignore_errors=True)
    shutil.copytree(result.adapter.path, adapter_dir)
    manifest = result.adapter.manifest
    return {
        "model": lift.loaded.name, "model_path": str(lift.loaded.path), "backend_used": manifest.backend,
        "precision": manifest.precision, "doc_tokens": manifest.tokens, "steps": manifest.steps,
        "train_s": manifest.train_seconds, "final_loss": manifest.losses["final"],
        "questions": questions, "in_memory_ids": in_memory, "in_memory": [decode(tokenizer, ids) for ids in in_memory],
        "pool": pool, "title": document.title, "max_new_tokens": max_new,
        "adapter_files": sorted(p.name for p in adapter_dir.iterdir()),
    }


def child_plain(spec: dict) -> dict:
    """Plain transformers + PEFT (this process never imports Unsloth): load the saved adapter and answer."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file

    from lift_tool.config import Settings
    from lift_tool.models import load_model

    adapter = Path(spec["adapter"])
    loaded = load_model(spec["model"], Settings(device=spec["device"]))
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as handle:
        saved = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    config = LoraConfig.from_pretrained(str(adapter))

    # What plain PEFT saves for this model and configuration: names and shapes.
    reference = get_peft_model(loaded.model, LoraConfig(r=config.r, lora_alpha=config.lora_alpha,
                                                        lora_dropout=config.lora_dropout, bias=config.bias,
                                                        target_modules=sorted(config.target_modules),
                                                        task_type="CAUSAL_LM"))
    expected = {name: tuple(t.shape) for name, t in get_peft_model_state_dict(reference).items()}
    plain_config = reference.peft_config["default"].to_dict()
    loaded.model = reference.unload()

    model = PeftModel.from_pretrained(loaded.model, str(adapter))
    model.eval()
    ids = [greedy_ids(model, loaded.tokenizer, q, spec["title"], spec["max_new_tokens"]) for q in spec["questions"]]
    # First-token distributions: reloaded adapter and bare base model, each against the trained model in memory.
    memory = load_file(spec["logprobs"])
    reloaded_gap, base_gap, top1_same = [], [], 0
    for i, question in enumerate(spec["questions"]):
        reloaded = next_token_logprobs(model, loaded.tokenizer, question, spec["title"])
        with model.disable_adapter():
            base = next_token_logprobs(model, loaded.tokenizer, question, spec["title"])
        trained = memory[f"q{i}"]
        reloaded_gap.append((reloaded - trained).abs().max().item())
        base_gap.append((base - trained).abs().max().item())
        top1_same += int(reloaded.argmax() == trained.argmax())
    ignore = {"base_model_name_or_path", "revision", "peft_version", "inference_mode"}  # set by saving itself
    saved_config = config.to_dict()
    differing = {key: [str(saved_config.get(key)), str(plain_config.get(key))]
                 for key in sorted(set(saved_config) | set(plain_config) - ignore)
                 if key not in ignore and str(saved_config.get(key)) != str(plain_config.get(key))}
    return {
        "answer_ids": ids,
        "first_token_top1_same": top1_same,
        "first_token_max_gap_reloaded": round(max(reloaded_gap), 4),
        "first_token_max_gap_base": round(min(base_gap), 4),
        "answers": [decode(loaded.tokenizer, i) for i in ids],
        "unsloth_imported": "unsloth" in sys.modules,
        "tensor_names_match": set(saved) == set(expected),
        "tensor_shapes_match": saved == expected,
        "unexpected_tensors": sorted(set(saved) - set(expected))[:10],
        "missing_tensors": sorted(set(expected) - set(saved))[:10],
        "embedding_tensors": sorted(n for n in saved if "embed_tokens" in n or "lm_head" in n),
        "config_differences_from_plain_peft": differing,
    }


CHILDREN = {"build": child_build, "speed": child_speed, "correctness": child_correctness, "plain": child_plain}


def run_child(kind: str, spec: dict, workdir: Path) -> dict:
    """Run one measurement in a fresh interpreter; its result comes back as JSON."""
    spec_file = workdir / f"{kind}-spec.json"
    result_file = workdir / f"{kind}-result.json"
    result_file.unlink(missing_ok=True)
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(spec_file), str(result_file)]
    process = subprocess.run(command, cwd=REPO)
    if process.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"the {kind} step failed (exit status {process.returncode}); its output is above")
    return json.loads(result_file.read_text())


def child_main(kind: str, spec_file: str, result_file: str) -> int:
    spec = json.loads(Path(spec_file).read_text())
    result = CHILDREN[kind](spec)
    Path(result_file).write_text(json.dumps(result))
    return 0


# ================================================================================================= documents


def document_texts(text: str, source: str, lengths: list[int], tokenizer) -> tuple[dict, list[dict], str]:
    """Cuts of ``text`` of about each length in tokens (ending at a sentence), and a warm-up cut from its end.
    A text too short for the longest cut is repeated, which the report says."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    warm = min(1024, *lengths)  # warm-up needs no long document
    needed = max(lengths) + warm
    note = f"{source} ({len(ids):,} tokens)"
    if len(ids) < needed:
        copies = -(-needed // len(ids))
        ids = tokenizer("\n\n".join([text] * copies), add_special_tokens=False)["input_ids"]
        note = f"{source} repeated {copies} times (it has {len(ids) // copies:,} tokens)"

    def cut(start: int, n: int) -> str:
        piece = tokenizer.decode(ids[start : start + n])
        end = max(piece.rfind(". "), piece.rfind(".\n"), piece.rfind("\n\n"))
        return piece[: end + 1] if end > len(piece) // 2 else piece

    documents = [{"title": f"Benchmark document ({n} tokens)", "text": cut(0, n)} for n in lengths]
    warmup = {"title": "Warm-up document", "text": cut(len(ids) - warm, warm)}
    return warmup, documents, note


# ==================================================================================================== report


def environment(dry_run: bool) -> dict:
    import importlib.metadata as metadata

    info = {"python": platform.python_version(), "machine": platform.machine(), "dry_run": dry_run,
            "cpu": f"{cpu_name()}, {os.cpu_count()} cores; {instruction_set()}"}
    for package in ("torch", "transformers", "peft", "unsloth", "unsloth_zoo", "trl", "triton"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    probe = ("import torch, json; print(json.dumps({'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() "
             "else None, 'cuda': torch.version.cuda}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    info.update(json.loads(out.stdout) if out.returncode == 0 else {"gpu": None})
    return info


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_report(out: Path, data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_absorb.json").write_text(json.dumps(data, indent=2))
    env = data["environment"]
    lines = ["# GPU absorption: PEFT against Unsloth", ""]
    if env.get("dry_run"):
        lines += ["**Dry run on a CPU with a tiny model: checks the benchmark's plumbing, measures nothing of the GPU "
                  "goals.**", ""]
    lines += ["Commands (from the repository root):", ""]
    lines += [f"    {command}" for command in data["commands"]]
    lines += ["", f"Last written {data['written']}. Machine: {env.get('gpu') or 'no GPU'} (CUDA {env.get('cuda')}), "
              f"CPU {env.get('cpu', '?')}; "
              f"Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}, "
              f"unsloth {env.get('unsloth')}, unsloth_zoo {env.get('unsloth_zoo')}.", ""]
    lines += [f"Text: {data.get('text_note', '-')}. Training settings: lift-tool's defaults except where a row says. "
              f"Answers: {SPEED_ANSWER_TOKENS} new tokens. Lengths are in SmolLM2 tokens; the models have Llama 3's "
              "vocabulary size and random weights (see the script's docstring). Retrieval indexing is not included.", ""]

    runs = data.get("speed", {})
    goal_lines = []
    for (shape, tokens), goal in GOALS_SECONDS.items():
        for key in sorted(k for k in runs if k.split("/")[0] == shape):
            run = runs[key]
            row = next((r for r in run.get("rows", []) if abs(r["doc_tokens"] - tokens) <= tokens * 0.1), None)
            got = f"{row['total_s']:.1f} s" if row else "not measured"
            met = "-" if not row else ("yes" if row["total_s"] < goal else "no")
            goal_lines.append(f"| {shape} | {key.split('/')[1]} | {run.get('settings', '-')} | ~{tokens:,} | < {goal:g} s | "
                              f"{got} | {met} |")
        if not any(k.split("/")[0] == shape for k in runs):
            goal_lines.append(f"| {shape} | - | - | ~{tokens:,} | < {goal:g} s | not measured | - |")
    lines += ["## Goals", "", "| shape | backend | training settings | document tokens | goal: document to first answer | "
              "measured | met |", "|---|---|---|---|---|---|---|", *goal_lines, ""]

    lines += ["## Document to first answer", "",
              "| shape | backend | settings | doc tokens | trained tokens | steps | tasks s | setup s | train s | save s | "
              "absorb s | answer s | **total s** | train tok/s | resident GiB | peak GiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(runs):
        run = runs[key]
        shape, backend = key.split("/")[:2]
        settings = run.get("settings", "-")
        if run.get("error"):
            lines.append(f"| {shape} | {backend} | {settings} | {run['error'][:200]} |")
        for row in run.get("rows", []):
            lines.append(
                f"| {shape} | {backend} | {settings} | {fmt(row['doc_tokens'])} | {fmt(row['tokens_trained'])} | {row['steps']} | "
                f"{fmt(row['tasks_s'])} | {fmt(row['attach_s'])} | {fmt(row['train_s'])} | {fmt(row['save_s'])} | "
                f"{fmt(row['absorb_s'])} | {fmt(row['answer_s'])} | **{fmt(row['total_s'])}** | "
                f"{fmt(row['train_tokens_per_s'], 0)} | {fmt(row.get('resident_gib'))} | {fmt(row.get('peak_gib'))} |")
    lines += ["", "tasks: synthetic question generation and task building, timed on their own (absorb does them "
              "again inside 'absorb'); setup: the backend's attach (Unsloth loads its own copy of the model); "
              "train: the optimisation loop; absorb: everything `Lift.absorb` does; answer: loading the adapter "
              "onto the answering model and generating; peak: `torch.cuda.max_memory_allocated` from the document "
              "to the answer, the resident answering model included.", ""]
    cold = [(key, run["cold"]) for key, run in sorted(runs.items()) if run.get("cold")]
    if cold:
        lines += ["Cold start (the first, warm-up document in a fresh process: CUDA and kernel warm-up, and for "
                  "Unsloth its import and compilation):", "", "| shape | backend | settings | doc tokens | total s | setup s |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {k.split('/')[0]} | {k.split('/')[1]} | {runs[k].get('settings', '-')} | {fmt(c['doc_tokens'])} | "
                  f"{fmt(c['total_s'])} | {fmt(c['attach_s'])} |" for k, c in cold]
        lines.append("")

    check = data.get("correctness")
    lines += ["## Correctness: the saved adapter in plain transformers + PEFT", ""]
    if not check:
        lines += ["Not run.", ""]
    elif check.get("error"):
        lines += [f"Failed: {check['error']}", ""]
    else:
        plain = check["plain"]
        same_ids = [a == b for a, b in zip(check["in_memory_ids"], plain["answer_ids"])]
        # Kernels differ (Unsloth's against PyTorch's), so allow a gap, but a small one next to the adapter's effect.
        faithful = (plain["first_token_top1_same"] == len(plain["answers"])
                    and plain["first_token_max_gap_reloaded"] < 0.1 * plain["first_token_max_gap_base"])
        same = sum(same_ids)
        same_pool = sum(a == b for a, b in zip(check["in_memory"], check["pool"]))
        lines += [
            f"Model {check['model']} ({check['precision']}), trained with the **{check['backend_used']}** backend on "
            f"the sample document ({check['doc_tokens']:,} tokens, {check['steps']} steps, {check['train_s']} s, "
            f"final loss {check['final_loss']}).", "",
            f"- files saved: {', '.join(check['adapter_files'])}",
            f"- tensor names as plain PEFT names them: {'yes' if plain['tensor_names_match'] else 'NO'}; shapes: "
            f"{'yes' if plain['tensor_shapes_match'] else 'NO'}; embedding or lm_head tensors: "
            f"{plain['embedding_tensors'] or 'none'}",
            f"- unexpected tensors: {plain['unexpected_tensors'] or 'none'}; missing: {plain['missing_tensors'] or 'none'}",
            f"- adapter_config.json fields that differ from plain PEFT's: "
            f"{json.dumps(plain['config_differences_from_plain_peft']) if plain['config_differences_from_plain_peft'] else 'none'}",
            f"- the plain process imported Unsloth: {'YES' if plain['unsloth_imported'] else 'no'}",
            f"- first answer token, reloaded adapter vs. trained model in memory: same most likely token for "
            f"{plain['first_token_top1_same']} of {len(plain['answers'])} questions; largest log-probability gap "
            f"{plain['first_token_max_gap_reloaded']} nats, where the bare base model is at least "
            f"{plain['first_token_max_gap_base']} nats away: the reloaded adapter computes what the trained one did: "
            f"**{'yes' if faithful else 'NO'}**",
            f"- **same greedy answers (token for token), trained model in memory vs. adapter reloaded in plain "
            f"transformers + PEFT: {same} of {len(plain['answers'])}**; same text from the adapter pool on the resident "
            f"model: {same_pool} of {len(check['pool'])}", "",
            "| question | trained model, in memory | plain transformers + PEFT | adapter pool |", "|---|---|---|---|"]
        for q, a, b, c, equal in zip(check["questions"], check["in_memory"], plain["answers"], check["pool"], same_ids):
            cells = [q, a, b + ("" if equal else " **(differs)**"), c]
            lines.append("| " + " | ".join(cell.replace("\n", " ").replace("|", "/") for cell in cells) + " |")
        lines.append("")
    (out / "gpu_absorb.md").write_text("\n".join(lines) + "\n")


# ====================================================================================================== main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, PEFT only, short documents")
    parser.add_argument("--shapes", help="comma-separated: 1b, 8b, tiny, or none (default: 1b,8b; dry run: tiny)")
    parser.add_argument("--backends", help="comma-separated: peft, unsloth (default: both; dry run: peft)")
    parser.add_argument("--lengths", help="document lengths in tokens (default: 1024,2048,4096,8192; dry run: 256,512)")
    parser.add_argument("--text", help="the text to cut documents from (default: the bundled sample, repeated)")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the bundled default model's)")
    parser.add_argument("--correctness-model", help="model spec for the correctness check: a folder, a .gguf file, "
                        "smollm2-135m (the default), shape:NAME for a random model of a shape above (dry run: "
                        "shape:tiny), or none")
    parser.add_argument("--correctness-backend", help="default: unsloth (dry run: peft)")
    parser.add_argument("--epochs", type=float, help="training epochs (default: lift-tool's default)")
    parser.add_argument("--batch-tokens", type=int, help="tokens per micro-batch (default: lift-tool's default)")
    parser.add_argument("--budget-seconds", type=float, help="absorption time budget (default: none)")
    parser.add_argument("--label", help="name for a run with other training settings, kept beside the default one")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "lift-gpu-bench"),
                        help="where the random models are kept between runs")
    parser.add_argument("--out", help="report folder (default: benchmarks/results/gpu_absorb; dry run: "
                        "benchmarks/out/dry-run)")
    parser.add_argument("--fresh", action="store_true", help="start a new report instead of merging into --out's")
    args = parser.parse_args(argv)

    dry = args.dry_run
    shapes = [] if args.shapes == "none" else (args.shapes or ("tiny" if dry else "1b,8b")).split(",")
    backends = (args.backends or ("peft" if dry else "peft,unsloth")).split(",")
    lengths = [int(n) for n in (args.lengths or ("256,512" if dry else "1024,2048,4096,8192")).split(",")]
    default_out = REPO / "benchmarks" / "out" / "dry-run" if dry else results_dir("gpu_absorb")
    out = Path(args.out) if args.out else default_out
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = "cpu" if dry else "cuda"
    training = {key: value for key, value in (("epochs", args.epochs if args.epochs else (0.25 if dry else None)),
                                              ("batch_tokens", args.batch_tokens),
                                              ("budget_seconds", args.budget_seconds)) if value is not None}
    command = "python benchmarks/bench_gpu_absorb.py " + " ".join(argv if argv is not None else sys.argv[1:])

    from transformers import AutoTokenizer

    from lift_tool.config import Settings
    from lift_tool.sample import sample_document_path
    from lift_tool.models import resolve_spec

    tokenizer_dir = Path(args.tokenizer) if args.tokenizer else Path(resolve_spec("smollm2-135m", Settings())[1])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text_path = Path(args.text) if args.text else sample_document_path()
    warmup, documents, text_note = document_texts(text_path.read_text(encoding="utf-8"), text_path.name, lengths, tokenizer)

    previous = out / "gpu_absorb.json"
    data = json.loads(previous.read_text()) if previous.exists() and not args.fresh else {}
    data.setdefault("commands", [])
    data.setdefault("speed", {})
    if command not in data["commands"]:
        data["commands"].append(command)
    data.update(environment=environment(dry), text_note=text_note)

    def save() -> None:
        data["written"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        write_report(out, data)

    if not dry and not data["environment"].get("gpu"):
        print("no CUDA GPU here: run with --dry-run, or on the GPU machine (see the docstring)", file=sys.stderr)
        return 2

    def random_model(shape: str) -> Path:
        folder = workdir / f"llama-{shape}-random"
        if not (folder / "config.json").exists():
            log(f"building the random {shape} model in {folder}")
            built = run_child("build", {"shape": shape, "folder": str(folder), "tokenizer": str(tokenizer_dir)}, workdir)
            log(f"built {built['parameters']:,} parameters in {built['seconds']} s")
        return folder

    for shape in shapes:
        folder = random_model(shape)
        for backend in backends:
            key = "/".join([shape, backend] + ([args.label] if args.label else []))
            if backend == "unsloth" and dry:
                data["speed"][key] = {"error": "not run: Unsloth needs a CUDA GPU"}
                continue
            spec = {"model": str(folder), "device": device, "backend": backend, "shape": shape, "training": training,
                    "settings_note": ", ".join(f"{k}={v}" for k, v in training.items()) or "defaults",
                    "warmup": warmup, "documents": documents, "answer_tokens": SPEED_ANSWER_TOKENS,
                    "partial": str(workdir / f"partial-{shape}-{backend}.json")}
            log(f"measuring {key}")
            Path(spec["partial"]).unlink(missing_ok=True)
            try:
                data["speed"][key] = run_child("speed", spec, workdir)
            except Exception as err:  # keep what finished; report the failure
                partial = Path(spec["partial"])
                data["speed"][key] = json.loads(partial.read_text()) if partial.exists() else {}
                data["speed"][key]["error"] = str(err)
            save()

    correctness_model = args.correctness_model or ("shape:tiny" if dry else "smollm2-135m")
    if correctness_model.startswith("shape:"):  # a random model: the logit check still means something
        correctness_model = str(random_model(correctness_model.split(":", 1)[1]))
    if correctness_model != "none":
        backend = args.correctness_backend or ("peft" if dry else "unsloth")
        log(f"correctness check: {correctness_model} with {backend}")
        spec = {"model": correctness_model, "device": device, "backend": backend,
                "training": {"epochs": 0.25} if dry else {}, "adapter_out": str(workdir / "correctness-adapter"),
                "logprobs_out": str(workdir / "correctness-logprobs.safetensors"), "questions": 4 if dry else None}
        try:
            check = run_child("correctness", spec, workdir)
            check["plain"] = run_child("plain", {"model": correctness_model, "device": device,
                                                 "adapter": spec["adapter_out"], "questions": check["questions"],
                                                 "logprobs": spec["logprobs_out"],
                                                 "title": check["title"], "max_new_tokens": check["max_new_tokens"]},
                                       workdir)
            data["correctness"] = check
        except Exception as err:
            data["correctness"] = {"error": str(err)}
    save()
    log(f"wrote {out / 'gpu_absorb.md'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        sys.exit(child_main(*sys.argv[2:]))
    sys.exit(main())
