"""Answers generated on a real vLLM server (`lift serve`, vLLM's CPU build in .venv-serve) against the same answers
generated in this process, with a real adapter of the bundled document."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servers import answers, free_port, started

from lift_tool.config import Settings
from lift_tool.errors import ConfigError, ServerError
from lift_tool.lift import Lift
from lift_tool.sample import sample_document_path, sample_questions

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def absorbed_home(tmp_path_factory, real_loaded):
    """A memory with the bundled document absorbed under a short budget (an adapter that answers unlike the base)."""
    home = tmp_path_factory.mktemp("served-home")
    lift = Lift(Settings(home=home, device="cpu"), model=real_loaded)
    lift.absorb(sample_document_path(), budget_seconds=20, progress=False)
    return home


@pytest.fixture(scope="module")
def vllm_url(absorbed_home, tmp_path_factory):
    from lift_tool.served import vllm_python

    try:
        vllm_python(Settings())
    except ConfigError as err:
        pytest.skip(f"vLLM is not set up ({err})")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "lift"), "serve", "--port", str(port), "--home", str(absorbed_home)]
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    # A small key/value cache: the answers are short, and the machine's memory is shared with the tests. float32:
    # see float32_loaded.
    with started(command, lambda: answers(f"{url}/v1/models"), log, timeout=600,
                 env={"VLLM_CPU_KVCACHE_SPACE": "1", "LIFT_DTYPE": "float32"}):
        yield url


@pytest.fixture(scope="module")
def float32_loaded(real_model_dir, real_loaded):
    """The default model in float32, as the server runs it here. On a CPU with bf16 kernels both sides would
    otherwise answer in bf16, where vLLM's kernels and torch's round differently: greedy answers then part at a
    near tie (measured: 2 of 16 adapter answers, "1722" against "1729"), while in float32 they agree. On a CPU
    without bf16 kernels the session's model is float32 already."""
    import torch

    from lift_tool.models import load_model

    if real_loaded.model.dtype == torch.float32:
        return real_loaded
    return load_model(settings=Settings(model=str(real_model_dir), device="cpu", dtype="float32"))


# lift+rag reads the passages (a prompt of about a thousand tokens) once or twice, which takes vLLM's CPU build
# seconds a question on one core: four of them here, all sixteen in benchmarks/bench_served.py.
@pytest.mark.parametrize("mode, questions", [("lift", 16), ("lift+rag", 4)])
def test_served_answers_equal_in_process_answers(mode, questions, absorbed_home, vllm_url, float32_loaded):
    local = Lift(Settings(home=absorbed_home, device="cpu", dtype="float32"), model=float32_loaded)
    served = Lift(Settings(home=absorbed_home, device="cpu", dtype="float32", server={"url": vllm_url}),
                  model=float32_loaded)
    doc = local.documents()[0].doc_id
    same, rows = 0, []
    for item in sample_questions()[:questions]:
        here = local.ask(item["question"], documents=[doc], mode=mode)
        there = served.ask(item["question"], documents=[doc], mode=mode)
        same += (here.text, here.mode) == (there.text, there.mode)
        rows.append((item["question"], here.text, here.mode, there.text, there.mode,
                     round(here.least_token_probability, 3), round(there.least_token_probability, 3)))
    assert len(rows) == questions
    assert same >= questions - 1, rows
    if mode == "lift":  # the adapter was used there: its answers are not the base model's
        base = [local.ask(q, documents=[doc], mode="base").text for q, *_ in rows]
        assert sum(b != r[3] for b, r in zip(base, rows)) >= 8


def test_a_served_adapter_is_registered_once_and_named_by_its_key(absorbed_home, vllm_url, real_loaded):
    import json
    import urllib.request

    served = Lift(Settings(home=absorbed_home, device="cpu", server={"url": vllm_url}), model=real_loaded)
    key = served.documents()[0].adapters[0].key
    served.ask("When was the harbour built?", documents=[served.documents()[0].doc_id], mode="lift")
    with urllib.request.urlopen(f"{vllm_url}/v1/models") as reply:
        names = [model["id"] for model in json.load(reply)["data"]]
    assert key in names and "HuggingFaceTB/SmolLM2-135M-Instruct" in names


def test_a_server_that_does_not_answer_is_one_clear_error(absorbed_home, real_loaded):
    url = f"http://127.0.0.1:{free_port()}"
    served = Lift(Settings(home=absorbed_home, device="cpu", server={"url": url}), model=real_loaded)
    doc = served.documents()[0].doc_id
    with pytest.raises(ServerError, match="does not answer.*unset LIFT_SERVER__URL"):
        served.ask("When was the harbour built?", documents=[doc], mode="lift")
    cli = subprocess.run([str(Path(sys.executable).parent / "lift"), "ask", doc[:12], "When was the harbour built?",
                          "--mode", "lift", "--home", str(absorbed_home)], capture_output=True, text=True,
                         env={**os.environ, "LIFT_SERVER__URL": url})
    assert cli.returncode == 1 and cli.stderr.count("\n") == 1 and "does not answer" in cli.stderr, cli.stderr


def test_lift_serve_chooses_the_flags_from_the_registry(absorbed_home):
    """The rank the registry needs, rounded up to one vLLM accepts; every adapter kept loaded; runtime loading on."""
    dry = subprocess.run([str(Path(sys.executable).parent / "lift"), "serve", "--dry-run", "--port", "8123", "--home",
                          str(absorbed_home)], capture_output=True, text=True,
                         env={**os.environ, "LIFT_LORA__RANK": "12", "LIFT_SERVER__PYTHON": sys.executable})
    assert dry.returncode == 0, dry.stderr
    line = dry.stdout.split()
    assert line[0] == "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
    flags = dict(zip(line[1:], line[2:]))
    assert flags["--max-lora-rank"] == "16"  # the stored adapter's rank 16 (and 12 asked for now) -> 16
    assert flags["--max-cpu-loras"] == "32" and flags["--max-loras"] == "8" and flags["--port"] == "8123"
    assert flags["--served-model-name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "--enable-lora" in line
    missing = subprocess.run([str(Path(sys.executable).parent / "lift"), "serve", "--home", str(absorbed_home)],
                             capture_output=True, text=True,
                             env={**os.environ, "LIFT_SERVER__PYTHON": str(absorbed_home / "no-python")})
    assert missing.returncode == 1 and "scripts/setup.sh serve" in missing.stderr


def test_an_adapter_the_server_refuses_is_one_clear_error(absorbed_home, vllm_url, real_loaded, tmp_path):
    """An adapter of a higher rank than the server was started for (here: its config says rank 32, the server
    takes 16) is refused by vLLM: a ServerError that names it and `lift serve`; the registry is untouched."""
    import dataclasses
    import json
    import shutil

    served = Lift(Settings(home=absorbed_home, device="cpu", server={"url": vllm_url}), model=real_loaded)
    entry = served.documents()[0].adapters[0]
    folder = tmp_path / "wide"
    shutil.copytree(entry.path, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 32}))
    wide = dataclasses.replace(entry, key="wide-" + entry.key[:8], path=folder)
    with pytest.raises(ServerError, match="refused adapter .*lift serve"):
        served.generator.server.load_adapter(wide)
    assert served.verify().ok
