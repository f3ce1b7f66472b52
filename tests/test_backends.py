"""Training backends: which one is chosen where, and what happens when Unsloth cannot be used.

Runs on a CPU. Where a test needs a machine with CUDA or with Unsloth installed, it sets what the selection
logic reads (``unsloth_installed``, the device string); nothing that runs here is replaced.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lift_tool.errors import ConfigError
from lift_tool.memory.manifest import MANIFEST_FILE
from lift_tool.training import backend as backend_module
from lift_tool.training.backend import choose_backend, make_backend

REPO = Path(__file__).resolve().parents[1]

SHORT_DOCUMENT = """# The Orrin Valley Railway

The Orrin Valley Railway opened in 1887 between Calder Bridge and the slate quarries at Penmorva. Its first
engineer was Agnes Tullow, who chose a gauge of two feet because the valley was too narrow for a wider line.
The railway carried slate down the valley and, from 1903, passengers on market days.

Traffic fell after the quarries closed in 1951. The line shut in 1962, and a preservation society reopened
the upper four miles in 1979. Its engine Tullow, built in 1898, still runs on summer weekends.
"""


# ------------------------------------------------------------------------------------------------ selection


def test_auto_picks_peft_on_cpu(monkeypatch):
    monkeypatch.setattr(backend_module, "unsloth_installed", lambda: True)  # even where Unsloth is installed
    assert choose_backend("auto", "cpu") == "peft"


def test_auto_picks_peft_on_cuda_without_unsloth(monkeypatch):
    monkeypatch.setattr(backend_module, "unsloth_installed", lambda: False)
    assert choose_backend("auto", "cuda") == "peft"
    assert choose_backend("auto", "cuda:1") == "peft"


def test_auto_picks_unsloth_on_cuda_where_installed(monkeypatch):
    monkeypatch.setattr(backend_module, "unsloth_installed", lambda: True)
    assert choose_backend("auto", "cuda:0") == "unsloth"


def test_peft_is_always_allowed():
    assert choose_backend("peft", "cpu") == "peft"
    assert choose_backend("peft", "cuda") == "peft"


def test_explicit_unsloth_on_cpu_is_a_config_error(monkeypatch):
    monkeypatch.setattr(backend_module, "unsloth_installed", lambda: True)
    with pytest.raises(ConfigError) as caught:
        choose_backend("unsloth", "cpu")
    message = str(caught.value)
    assert "CUDA" in message and "--backend peft" in message


def test_explicit_unsloth_on_cuda_without_unsloth_says_how_to_install(monkeypatch):
    monkeypatch.setattr(backend_module, "unsloth_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'lift-tool\[gpu\]'"):
        choose_backend("unsloth", "cuda")


def test_make_backend_does_not_import_unsloth():
    # A fresh interpreter: this process may have imported anything by now.
    code = (
        "import sys\n"
        "from lift_tool.training.backend import make_backend\n"
        "from lift_tool.training.unsloth_backend import UnslothBackend\n"
        "backend = make_backend('unsloth')\n"
        "assert isinstance(backend, UnslothBackend) and backend.name == 'unsloth', backend\n"
        "heavy = sorted(m for m in ('unsloth', 'unsloth_zoo', 'torch', 'transformers', 'peft') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""  # neither Unsloth nor torch were imported


def test_make_backend_peft():
    assert make_backend("peft").name == "peft"


# ------------------------------------------------------------------------------------ Unsloth on a CPU box


def test_unsloth_attach_on_cpu_is_a_config_error(tiny_loaded, tiny_settings):
    from lift_tool.training.unsloth_backend import UnslothBackend

    assert tiny_loaded.path is not None and str(tiny_loaded.device) == "cpu"
    with pytest.raises(ConfigError) as caught:
        UnslothBackend().attach(tiny_loaded, tiny_settings)
    assert "CUDA" in str(caught.value) and "--backend peft" in str(caught.value)
    assert "unsloth" not in sys.modules
    assert not any(name.startswith("lora_") for name, _ in tiny_loaded.model.named_parameters())


def test_unsloth_attach_needs_a_model_folder(tiny_loaded, tiny_settings):
    from lift_tool.models import wrap_model
    from lift_tool.training.unsloth_backend import UnslothBackend

    in_memory = wrap_model(tiny_loaded.model, tiny_loaded.tokenizer, name="built-in-memory")
    assert in_memory.path is None
    with pytest.raises(ConfigError, match="--backend peft") as caught:
        UnslothBackend().attach(in_memory, tiny_settings)
    assert "folder" in str(caught.value)


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is not None, reason="Unsloth is installed here")
def test_missing_unsloth_is_a_config_error_naming_the_extra():
    from lift_tool.training.unsloth_backend import _import_unsloth

    with pytest.raises(ConfigError, match=r"pip install 'lift-tool\[gpu\]'"):
        _import_unsloth()


def test_cli_absorb_with_unsloth_on_cpu_fails_in_one_line(tiny_model_dir, tmp_path):
    document = tmp_path / "railway.md"
    document.write_text(SHORT_DOCUMENT)
    home = tmp_path / "home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("LIFT_BACKEND", None)
    result = subprocess.run(
        [sys.executable, "-m", "lift_tool.cli", "--model", str(tiny_model_dir), "--home", str(home), "--device", "cpu",
         "absorb", str(document), "--backend", "unsloth", "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr  # an error found while running (2 is for a wrong command line)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("lift: error:")]
    assert len(errors) == 1, result.stderr
    assert "CUDA" in errors[0] and "--backend peft" in errors[0]
    # Nothing was stored.
    from lift_tool.memory.registry import Registry

    assert Registry(home).list_documents() == []


# ------------------------------------------------------------------------------------------- CPU fallback


def test_auto_absorbs_with_peft_on_cpu(tiny_model_dir, lift_home, tmp_path):
    from lift_tool.config import Settings
    from lift_tool.documents import make_document
    from lift_tool.models import load_model
    from lift_tool.training.absorb import absorb

    settings = Settings(model=str(tiny_model_dir), home=lift_home, device="cpu", backend="auto",
                        training={"epochs": 0.2})
    loaded = load_model(settings=settings)
    before = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()}
    out = tmp_path / "adapter"

    manifest = absorb(make_document(SHORT_DOCUMENT), loaded, settings, out, progress=False)

    assert manifest.backend == "peft"
    assert json.loads((out / MANIFEST_FILE).read_text())["backend"] == "peft"
    assert manifest.steps >= 1 and manifest.tokens_trained > 0
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    after = loaded.model.state_dict()
    assert set(after) == set(before)  # the LoRA layers are gone again
    assert all(after[name].equal(before[name]) for name in before)
