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
    assert result.returncode == 1  # found while running
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_user_errors_give_one_line(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    cases = [
        (["absorb", str(tmp_path / "missing.txt")], "file not found"),
        (["--model", "no-such-model", "ask", "x", "question?"], ""),
        (["--model", str(tiny_model_dir), "ask", "nosuchdoc", "question?"], "nothing in memory"),  # at once
        (["forget", "nosuchdoc"], "no absorbed document matches"),
    ]
    for args, message in cases:
        result = run_lift(*args, home=home)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
    unknown_model = run_lift("--model", "no-such-model", "absorb", str(REPO / "README.md"), home=home)
    assert "unknown model" in unknown_model.stderr and unknown_model.returncode == 1


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
    assert process.returncode in (1, 130), stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not list((home / "adapters").glob("*")) if (home / "adapters").exists() else True
    assert not list((home / "staging").glob("*"))
    assert "no documents" in run_lift("list", home=home).stdout


TINY_ENV = {"LIFT_TRAINING__EPOCHS": "0.3", "LIFT_TRAINING__MIN_STEPS": "1"}


def test_version_json_and_options_after_the_command(tmp_path, tiny_model_dir):
    import json

    version = run_lift("--version", home=tmp_path / "unused")
    assert version.returncode == 0 and version.stdout.startswith("lift-tool ")
    doc = tmp_path / "brimley.md"
    doc.write_text("# Brimley\n\nBrimley was founded in 1841 by the engineer Agatha Moorcroft.\n")
    home = tmp_path / "home"
    elsewhere = tmp_path / "not-this-one"  # LIFT_HOME: the options after the command must win over it
    absorbed = run_lift("absorb", str(doc), "--model", str(tiny_model_dir), "--home", str(home), "--json",
                        home=elsewhere, env_extra=TINY_ENV)
    assert absorbed.returncode == 0, absorbed.stderr
    record = json.loads(absorbed.stdout)
    assert record["title"] == "Brimley" and record["steps"] >= 1 and not record["cached"]
    assert "Loading weights" not in absorbed.stderr and "Warning" not in absorbed.stderr  # quiet without --verbose

    listed = json.loads(run_lift("list", "--home", str(home), "--json", home=elsewhere).stdout)
    assert [d["title"] for d in listed] == ["Brimley"] and listed[0]["route"] == "absorb"
    assert listed[0]["coverage"] == 1.0  # absorbed whole
    assert json.loads(run_lift("list", "--json", home=elsewhere).stdout) == []

    asked = run_lift("ask", "Brimley", "Who founded Brimley?", "--mode", "rag", "--max-new-tokens", "3", "--json",
                     "--model", str(tiny_model_dir), home=home)
    answer = json.loads(asked.stdout)
    assert answer["mode"] == "rag" and answer["documents"][0]["title"] == "Brimley" and answer["usage"]["output_tokens"] <= 3
    verified = run_lift("verify", "--json", home=home)
    assert verified.returncode == 0 and json.loads(verified.stdout)["intact"] is True

    shown = run_lift("show", "Brimley", home=home)
    assert shown.returncode == 0, shown.stderr
    assert "adapter " in shown.stdout and "steps" in shown.stdout and "1 retrieval chunk(s)" in shown.stdout
    assert "#0 chars 0-" in shown.stdout and "Agatha Moorcroft" in shown.stdout
    shown_json = json.loads(run_lift("show", "Brimley", "--json", home=home).stdout)
    assert shown_json["adapters"][0]["doc_id"] == record["doc_id"] and shown_json["chunks"][0]["index"] == 0


def test_ctrl_c_during_lift_absorb_keeps_its_training_and_the_next_absorb_goes_on_from_it(tmp_path, tiny_model_dir):
    import json

    doc = tmp_path / "brimley.md"
    doc.write_text("# Brimley\n\nBrimley was founded in 1841 by the engineer Agatha Moorcroft.\n")
    home = tmp_path / "home"
    env = {**os.environ, "LIFT_HOME": str(home), "PYTHONPATH": str(REPO), "LIFT_MODEL": str(tiny_model_dir),
           "LIFT_TRAINING__MIN_STEPS": "150", "LIFT_TRAINING__CHECKPOINT_SECONDS": "1e-9"}
    # SIGINT as a terminal delivers it, also where the tests run in a background job, whose children ignore it
    absorbing = subprocess.Popen([sys.executable, "-m", "lift_tool.cli", "absorb", str(doc), "--quiet"],
                                 stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    unfinished = home / "unfinished"
    deadline = time.monotonic() + 240
    while not any(unfinished.glob("*/checkpoint.safetensors")) and time.monotonic() < deadline:
        assert absorbing.poll() is None, absorbing.stderr.read()
        time.sleep(0.1)
    absorbing.send_signal(signal.SIGINT)
    _, err = absorbing.communicate(timeout=120)
    assert absorbing.returncode == 1 and "nothing was stored" in err and "goes on from there" in err, err

    again = subprocess.run([sys.executable, "-m", "lift_tool.cli", "absorb", str(doc), "--json"], capture_output=True,
                           text=True, env=env, cwd=REPO, timeout=300)
    assert again.returncode == 0, again.stderr
    shown = json.loads(run_lift("show", "Brimley", "--json", home=home).stdout)["adapters"][0]
    assert shown["resumed_at_step"] > 0 and shown["steps"] == shown["planned_steps"]
    assert "resumed at step" in run_lift("show", "Brimley", home=home).stdout
    assert list(unfinished.iterdir()) == []


def test_exit_codes_and_refusals(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    usage = run_lift("verify", "--prune", home=home)
    assert usage.returncode == 2 and "--prune goes with --repair" in usage.stderr
    assert run_lift("list", "--no-such-option", home=home).returncode == 2
    assert run_lift("export", "doc", home=home).returncode == 2  # neither a file nor --peft

    empty = run_lift("--model", "/no/such/model", "ask", "Who founded Brimley?", home=home)
    assert empty.returncode == 1 and "nothing in memory" in empty.stderr  # no model was loaded to say so

    short = tmp_path / "t.html"
    short.write_text("<title>T</title>")
    refused = run_lift("--model", str(tiny_model_dir), "absorb", str(short), home=home, env_extra=TINY_ENV)
    assert refused.returncode == 1 and "too short to absorb" in refused.stderr, refused.stderr
    assert "no documents" in run_lift("list", home=home).stdout  # no untrained adapter was stored

    doc = tmp_path / "brimley.md"
    doc.write_text("# Brimley\n\nBrimley was founded in 1841 by the engineer Agatha Moorcroft.\n")
    assert run_lift("--model", str(tiny_model_dir), "absorb", str(doc), "--quiet", "--verbose", home=home,
                    env_extra=TINY_ENV).returncode == 0
    unquoted = run_lift("--model", str(tiny_model_dir), "ask", "Who", "founded", "Brimley?", home=home)
    assert unquoted.returncode == 1 and "quote it" in unquoted.stderr

    archive = tmp_path / "brimley.lift.tar.gz"
    archive.write_bytes(b"precious")
    kept = run_lift("export", "Brimley", str(archive), home=home)
    assert kept.returncode == 1 and "--force" in kept.stderr and archive.read_bytes() == b"precious"
    forced = run_lift("export", "Brimley", str(archive), "--force", home=home)
    assert forced.returncode == 0 and archive.read_bytes() != b"precious"
