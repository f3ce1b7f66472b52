"""Convert a GGUF file into a safetensors folder in the cache, once, so later loads take a second instead of
twenty. The conversion writes into a temporary folder and renames it into place under a file lock, so two
processes converting at once never leave a half-written cache."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from lift_tool.errors import ModelError
from lift_tool.models.fingerprint import FINGERPRINT_FILE, fingerprint_folder


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Convert a GGUF file to a safetensors folder at ``target`` once; safe with several processes."""
    if (target / FINGERPRINT_FILE).is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / FINGERPRINT_FILE).is_file():  # another process finished while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            _convert_into(gguf, staging)
            if target.exists():  # a folder left by an older, interrupted layout: replace it
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_into(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:  # transformers raises many types for unsupported or damaged files
        raise ModelError(f"could not read GGUF file {gguf}: {err}") from err
    finally:
        hf_logging.enable_progress_bar()
    # The GGUF weights are dequantised on load; drop the quantisation record so the folder loads (and trains)
    # as an ordinary full-precision model.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # Fingerprint last: its presence marks the folder complete.
    (folder / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": fingerprint_folder(folder)}))
