"""Real PEFT LoRA adapters on the tiny test model, and the worker of the multi-process registry test.

Nothing heavy is imported at module level: the multi-process test's spawned workers import this module and only
need the registry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import traceback
from pathlib import Path

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SETTINGS_A = "settings-a"
SETTINGS_B = "settings-b"


def doc_id_for(text: str) -> str:
    """A document id as absorption computes it: sha256 of the normalised text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_lora(model_dir: Path, folder: Path, seed: int, rank: int = 4, targets: list[str] | None = None) -> Path:
    """Save a LoRA adapter with random, non-zero weights (different per seed) for the model in ``model_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, init_lora_weights=False, target_modules=targets or ALL_PROJECTIONS
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # B at PEFT's random init is large for a 64-wide model; keep the updates moderate
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.2)
    peft_model.save_pretrained(folder)
    return Path(folder)


def write_manifest(
    folder: Path,
    doc_id: str,
    title: str,
    base_fingerprint: str,
    settings_fingerprint: str = SETTINGS_A,
    tokens: int = 120,
    base_model: str = "tiny-llama",
    train_seconds: float = 1.5,
) -> None:
    manifest = {
        "doc_id": doc_id,
        "title": title,
        "tokens": tokens,
        "base_model": base_model,
        "base_fingerprint": base_fingerprint,
        "settings_fingerprint": settings_fingerprint,
        "train_seconds": train_seconds,
        "created": "2025-01-01T00:00:00+00:00",
        "settings": {"rank": 4},
        "losses": [3.0, 2.0],
        "backend": "peft",
    }
    (Path(folder) / "lift_manifest.json").write_text(json.dumps(manifest))


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its bytes, to compare before and after."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def copy_adapter_files(source: Path, folder: Path) -> None:
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(Path(source) / name, Path(folder) / name)


def store_adapter(
    registry,
    source: Path,
    text: str,
    title: str,
    base_fingerprint: str,
    settings_fingerprint: str = SETTINGS_A,
    base_model: str = "tiny-llama",
):
    """What absorption does at its end: register the document, stage the adapter with its manifest, add it."""
    doc_id = doc_id_for(text)
    registry.add_document(doc_id, title, text, tokens=len(text.split()), route="absorb")
    with registry.staging() as folder:
        copy_adapter_files(source, folder)
        write_manifest(folder, doc_id, title, base_fingerprint, settings_fingerprint, base_model=base_model)
        # The text goes along too: another process may remove the document between the two calls.
        return registry.add_adapter(folder, text=text)


# ---------------------------------------------------------------------------------- multi-process worker

SHARED_TEXT = "A document that every worker absorbs again and again. " * 8


def worker_text(worker: int) -> str:
    return f"The private document of worker {worker}. " * 8


def churn_worker(home: str, source: str, worker: int, rounds: int, barrier) -> None:
    """Add, remove and re-add documents in a loop, then (after every worker is done churning) add the
    worker's own document and the shared one a last time. Exits non-zero on any unexpected error."""
    from lift_tool.errors import UnknownDocumentError
    from lift_tool.memory.registry import Registry

    try:
        registry = Registry(Path(home))
        own = worker_text(worker)
        for round_ in range(rounds):
            store_adapter(registry, Path(source), own, f"worker {worker}", "fp-base")
            store_adapter(registry, Path(source), SHARED_TEXT, "shared", "fp-base")
            registry.remove(doc_id_for(own))
            if (round_ + worker) % 2:
                try:
                    registry.remove(doc_id_for(SHARED_TEXT))
                except UnknownDocumentError:
                    pass  # another worker removed it first
            registry.list_documents()
        barrier.wait(timeout=120)
        store_adapter(registry, Path(source), own, f"worker {worker}", "fp-base")
        store_adapter(registry, Path(source), SHARED_TEXT, "shared", "fp-base")
    except BaseException:
        traceback.print_exc()
        barrier.abort()  # the others stop waiting for this worker
        sys.exit(1)


def open_new_index_worker(home: str, barrier) -> None:
    """Wait for the other workers, then list the documents of ``home``, whose index does not exist yet: every worker
    opens the new file at the same moment. Exits non-zero on any error."""
    from lift_tool.memory.registry import Registry

    try:
        registry = Registry(Path(home))
        barrier.wait(timeout=120)
        registry.list_documents()
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
