"""Shared fixtures: a tiny randomly initialised Llama for fast mechanics tests, and the real default model
for the few behaviour tests (marked ``slow``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never reach for a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_VOCAB_SOURCE = "smollm2-135m"  # the tiny model borrows the real tokenizer so text round-trips


@pytest.fixture(scope="session")
def real_tokenizer_dir(tmp_path_factory) -> Path:
    """The default model's converted folder (converted once per machine into the user cache)."""
    from lift_tool.config import Settings
    from lift_tool.models import resolve_spec

    _, folder = resolve_spec(TINY_VOCAB_SOURCE, Settings())
    return Path(folder)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, real_tokenizer_dir) -> Path:
    """A 2-layer random Llama with the real tokenizer, saved as an ordinary Hugging Face folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def lift_home(tmp_path, monkeypatch) -> Path:
    """A fresh memory directory for one test, also exported as LIFT_HOME for subprocesses."""
    home = tmp_path / "lift-home"
    monkeypatch.setenv("LIFT_HOME", str(home))
    return home


@pytest.fixture
def tiny_settings(tiny_model_dir, lift_home):
    from lift_tool.config import Settings

    # float32: the tiny model's tests compare logits with PEFT's own to 1e-5; the real-model tests run the
    # default number format (bf16 on CPUs with bf16 kernels).
    return Settings(model=str(tiny_model_dir), home=lift_home, device="cpu", dtype="float32")


@pytest.fixture
def tiny_loaded(tiny_settings):
    from lift_tool.models import load_model

    return load_model(settings=tiny_settings)
