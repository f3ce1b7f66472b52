import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from lift_tool.config import Settings, load_settings
from lift_tool.errors import ConfigError, ModelError
from lift_tool.models import FINGERPRINT_FILE, cpu_has_bf16_kernels, fingerprint_folder, load_model, pick_dtype, resolve_spec


def test_load_local_folder_has_fingerprint_and_window(tiny_loaded, tiny_model_dir):
    assert tiny_loaded.fingerprint.startswith("llama-")
    assert tiny_loaded.context_window == 1024
    assert tiny_loaded.path == tiny_model_dir.resolve()
    assert str(tiny_loaded.model.device) == "cpu"


def test_cpu_answers_in_bf16_only_where_the_cpu_has_bf16_kernels(tiny_model_dir, lift_home):
    import torch

    assert pick_dtype("cpu") == (torch.bfloat16 if cpu_has_bf16_kernels() else torch.float32)
    assert pick_dtype("cpu", "float32") == torch.float32  # asked for: always honoured
    loaded = load_model(settings=Settings(model=str(tiny_model_dir), home=lift_home, device="cpu"))
    assert loaded.model.dtype == pick_dtype("cpu")


def test_fingerprint_changes_with_weights(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert fingerprint_folder(copy) == fingerprint_folder(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(copy)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    model.save_pretrained(copy)
    assert fingerprint_folder(copy) != fingerprint_folder(tiny_model_dir)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no-such-model", "unknown model"),
        ("./missing-folder", "model not found"),
        ("/nonexistent/model.gguf", "model file not found"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(ModelError, match=message):
        resolve_spec(spec, Settings())


def test_folder_without_config_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_spec(str(tmp_path), Settings())


def test_hub_id_without_hub_says_to_use_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="local folder"):
        load_model("some-org/some-model-that-is-not-cached", Settings(device="cpu"))


def test_bad_setting_is_a_config_error():
    with pytest.raises(ConfigError):
        load_settings(training={"segment_tokens": 64, "segment_stride": 128})


def test_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFT_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("LIFT_TRAINING__EPOCHS", "7")
    settings = load_settings()
    assert settings.home == tmp_path / "h"
    assert settings.training.epochs == 7


def _convert(gguf: str, target: str) -> str:
    from lift_tool.models import convert_gguf

    return str(convert_gguf(Path(gguf), Path(target)))


@pytest.mark.slow
def test_two_processes_converting_at_once_leave_one_complete_folder(tmp_path):
    from lift_tool.models import BUNDLED

    gguf = BUNDLED["smollm2-135m"].locate_gguf(Settings())
    target = tmp_path / "models" / "smollm2"
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(_convert, [(str(gguf), str(target))] * 2)
    assert results == [str(target)] * 2
    assert json.loads((target / FINGERPRINT_FILE).read_text())["fingerprint"].startswith("llama-")
    leftovers = [p.name for p in target.parent.iterdir() if p.name not in {"smollm2", "smollm2.lock"}]
    assert leftovers == []
