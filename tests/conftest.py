"""Shared fixtures: a tiny randomly initialised Llama for fast mechanics tests, and the real default model
for the few behaviour tests (marked ``slow``).

Only ``real_loaded`` loads the real model, once per session, for the tests that ask for it. The tiny model
borrows the real tokenizer, which lies in the real model's converted folder: converting the bundled GGUF file
takes about a minute once per machine (into the user cache; later sessions find it there at once), while
reading the tokenizer alone from the GGUF file would take ten seconds in every session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never reach for a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REAL_MODEL = "smollm2-135m"  # the default model; the tiny model borrows its tokenizer so text round-trips


@pytest.fixture(scope="session", autouse=True)
def tests_may_read_their_temporary_files(tmp_path_factory):
    """Agents' faces read only files under LIFT_ALLOWED_ROOTS (by default the working directory and the documents
    folder): the tests' own temporary folders are allowed too, here and in the processes they start. Tests of the
    rule set the roots themselves."""
    roots = os.pathsep.join([str(Path.cwd()), str(Path(__file__).resolve().parents[1]),
                             str(tmp_path_factory.getbasetemp())])
    os.environ.setdefault("LIFT_ALLOWED_ROOTS", roots)


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """The default model's converted folder (converted once per machine into the user cache)."""
    from lift_tool.config import Settings
    from lift_tool.models import resolve_spec

    _, folder = resolve_spec(REAL_MODEL, Settings())
    return Path(folder)


@pytest.fixture(scope="session")
def real_tokenizer_dir(real_model_dir) -> Path:
    """A folder with the default model's tokenizer: its converted folder (no weights are loaded from it)."""
    return real_model_dir


@pytest.fixture(scope="session")
def real_loaded(real_model_dir):
    """The default model loaded on the CPU in the default number format, shared by the session's tests: they
    generate with it and must leave it as they found it (remove any hook they add)."""
    from lift_tool.config import Settings
    from lift_tool.models import load_model

    return load_model(settings=Settings(model=str(real_model_dir), device="cpu"))


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
    # default number format (bf16 on CPUs with bf16 instructions).
    return Settings(model=str(tiny_model_dir), home=lift_home, device="cpu", dtype="float32")


@pytest.fixture
def tiny_loaded(tiny_settings):
    """The tiny model, loaded afresh for each test: tests change it (adapters, attention, training)."""
    from lift_tool.models import load_model

    return load_model(settings=tiny_settings)
