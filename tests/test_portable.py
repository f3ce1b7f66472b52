"""Portable adapters: the base model named as a user loads it, a filled model card, and `lift export --peft`
writing a folder that PEFT loads on a machine without lift-tool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lift_tool.portable import hub_name

REPO = Path(__file__).resolve().parents[1]
NOTE = "# Brimley\n\nBrimley was founded in 1841 by the engineer Agatha Moorcroft. Its harbour was built in 1902."

# Run in a fresh interpreter in which lift_tool cannot be imported: only transformers and PEFT.
LOAD_WITHOUT_LIFT_TOOL = """
import json, sys
sys.modules["lift_tool"] = None  # any import of lift-tool fails
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base_dir, folder = sys.argv[1], sys.argv[2]
base = AutoModelForCausalLM.from_pretrained(base_dir)
model = PeftModel.from_pretrained(base, folder)
lora = {name: param for name, param in model.named_parameters() if "lora_B" in name}
print(json.dumps({"lora_tensors": len(lora), "trained": any(bool(p.abs().sum() > 0) for p in lora.values()),
                  "base": model.peft_config["default"].base_model_name_or_path}))
"""


def load_without_lift_tool(base_dir: Path, folder: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_LIFT_TOOL, str(base_dir), str(folder)],
                            capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"}, cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_base_model_is_named_as_a_user_loads_it(tmp_path):
    assert hub_name("smollm2-135m") == hub_name("smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_name("qwen") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert hub_name("org/some-model") == "org/some-model"
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "org/base-7b"}))
    assert hub_name(str(folder), folder) == "org/base-7b"
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "/home/me/models/x"}))
    assert hub_name(str(folder), folder) == "my-model"  # never a path on this machine


@pytest.fixture
def lift(tiny_settings, tmp_path):
    from lift_tool.lift import Lift

    training = tiny_settings.training.model_copy(update={"epochs": 0.3, "min_steps": 1, "batch_tokens": 2048})
    return Lift(tiny_settings.model_copy(update={"training": training, "cache_dir": tmp_path / "cache"}))


def test_adapter_folders_carry_a_portable_config_and_a_model_card(lift, tiny_model_dir):
    result = lift.absorb(NOTE, progress=False)
    folder = result.adapter.path
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_model_dir.name  # not the path it was loaded from
    assert result.adapter.manifest.base_fingerprint  # the exact base model stays in the manifest
    card = (folder / "README.md").read_text()
    assert "More Information Needed" not in card
    for expected in ("# LIFT adapter: Brimley", f"{result.adapter.manifest.tokens:,} tokens", "LoRA rank 16",
                     "PeftModel.from_pretrained", "vllm serve", "--enable-lora"):
        assert expected in card, expected
    assert "README.md" in json.loads((folder / "checksums.json").read_text())["files"]
    assert not lift.verify().problems()


def test_export_peft_loads_without_lift_tool(lift, tiny_model_dir, tmp_path):
    from lift_tool.errors import InputError

    lift.absorb(NOTE, progress=False)
    out = lift.export_peft("Brimley", tmp_path / "peft")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    with pytest.raises(InputError, match="--force"):
        lift.export_peft("Brimley", out)
    lift.export_peft("Brimley", out, force=True)
    loaded = load_without_lift_tool(tiny_model_dir, out)
    assert loaded["lora_tensors"] > 0 and loaded["trained"] and loaded["base"] == tiny_model_dir.name


@pytest.mark.slow
def test_an_adapter_of_the_bundled_model_names_its_hub_id_and_loads_on_the_converted_model(real_model_dir, tmp_path):
    """On the real model (a few training steps): `lift export --peft` from the CLI, loaded by PEFT alone."""
    home = tmp_path / "home"
    doc = tmp_path / "brimley.md"
    doc.write_text(NOTE)
    env = {**os.environ, "LIFT_HOME": str(home), "PYTHONPATH": str(REPO), "LIFT_TRAINING__MIN_STEPS": "2",
           "LIFT_TRAINING__EPOCHS": "0.05"}

    def lift(*args):
        result = subprocess.run([sys.executable, "-m", "lift_tool.cli", *args], capture_output=True, text=True,
                                env=env, cwd=REPO, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    lift("absorb", str(doc), "--quiet")
    lift("export", "Brimley", "--peft", str(tmp_path / "peft"))
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in (tmp_path / "peft" / "README.md").read_text()
    loaded = load_without_lift_tool(real_model_dir, tmp_path / "peft")
    assert loaded["trained"] and loaded["base"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
