import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_lift(*args, home, env_extra=None, timeout=300):
    env = {**os.environ, "LIFT_HOME": str(home), "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "lift_tool.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def test_help_does_not_load_torch(tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "lift_tool.cli", "--help"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0 and "absorb" in result.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "transformers", "peft", "chromadb", "langchain", "langgraph", "pydantic"}


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"\x00\x01binary\x00", "binary"), (b"caf\xe9", "UTF-8")],
)
def test_bad_documents_give_one_line(tmp_path, tiny_model_dir, content, message):
    path = tmp_path / "doc.txt"
    path.write_bytes(content)
    result = run_lift("--model", str(tiny_model_dir), "absorb", str(path), home=tmp_path / "home")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_user_errors_give_one_line(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    cases = [
        (["absorb", str(tmp_path / "missing.txt")], "file not found"),
        (["--model", "no-such-model", "ask", "x", "question?"], ""),
        (["--model", str(tiny_model_dir), "ask", "nosuchdoc", "question?"], "no absorbed document matches"),
        (["forget", "nosuchdoc"], "no absorbed document matches"),
    ]
    for args, message in cases:
        result = run_lift(*args, home=home)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
    unknown_model = run_lift("--model", "no-such-model", "absorb", str(REPO / "README.md"), home=home)
    assert "unknown model" in unknown_model.stderr and unknown_model.returncode == 2


def test_absorb_list_ask_forget(tmp_path, tiny_model_dir):
    doc = tmp_path / "brimley.md"
    doc.write_text("# Brimley\n\nBrimley was founded in 1841 by the engineer Agatha Moorcroft.\n")
    home = tmp_path / "home"
    common = ["--model", str(tiny_model_dir)]
    env = {"LIFT_TRAINING__EPOCHS": "0.3", "LIFT_TRAINING__MIN_STEPS": "1"}  # a few steps: this test is about the commands
    absorbed = run_lift(*common, "absorb", str(doc), "--quiet", home=home, env_extra=env)
    assert absorbed.returncode == 0, absorbed.stderr
    assert "absorbed" in absorbed.stdout
    again = run_lift(*common, "absorb", str(doc), "--quiet", home=home, env_extra=env)
    assert "already absorbed" in again.stdout
    listed = run_lift("list", home=home)
    assert "Brimley" in listed.stdout and "absorb" in listed.stdout
    asked = run_lift(*common, "ask", "Brimley", "Who founded Brimley?", "--mode", "lift", "--max-new-tokens", "3", home=home)
    assert asked.returncode == 0, asked.stderr
    assert "[lift; Brimley;" in asked.stderr
    assert run_lift("verify", home=home).stdout.strip() == "memory is intact"
    forgot = run_lift("forget", "Brimley", home=home)
    assert forgot.returncode == 0 and "forgot" in forgot.stdout
    assert "no documents" in run_lift("list", home=home).stdout


@pytest.mark.integration
def test_ctrl_c_during_absorption_leaves_nothing(tmp_path, tiny_model_dir):
    doc = tmp_path / "long.md"
    doc.write_text("# Long\n\n" + " ".join(f"Item {i} was made in {1800 + i} by Ada Brook." for i in range(300)))
    home = tmp_path / "home"
    env = {**os.environ, "LIFT_HOME": str(home), "PYTHONPATH": str(REPO), "LIFT_TRAINING__EPOCHS": "50"}
    # A shell that runs the suite in the background starts it with SIGINT ignored, and children inherit that:
    # give the child the default disposition, as a terminal would, so that Python turns SIGINT into Ctrl-C.
    process = subprocess.Popen([sys.executable, "-m", "lift_tool.cli", "--model", str(tiny_model_dir), "absorb", str(doc)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((home / "staging").glob("*")):
        time.sleep(0.2)  # the staging folder appears once training has started
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=180)  # generous: a loaded CI machine unwinds slowly
    assert process.returncode in (2, 130), stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not list((home / "adapters").glob("*")) if (home / "adapters").exists() else True
    assert not list((home / "staging").glob("*"))
    assert "no documents" in run_lift("list", home=home).stdout
