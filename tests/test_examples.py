"""Every example runs, as a user would run it, in its own process: on the tiny model with a one-step training
recipe (set through the LIFT_* environment), offline, with a scratch memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def run_example(tiny_model_dir, tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "LIFT_HOME": str(tmp_path / "home"),
        "LIFT_CACHE_DIR": str(tmp_path / "cache"),
        "LIFT_MODEL": str(tiny_model_dir),
        "LIFT_DEVICE": "cpu",
        "LIFT_TRAINING__EPOCHS": "0.05",
        "LIFT_TRAINING__MIN_STEPS": "1",
        "LIFT_TRAINING__BATCH_TOKENS": "2048",
        "LIFT_MAX_NEW_TOKENS": "8",
        # The tiny model is random, so it is never sure of an adapter's answer: keep them, so that the examples
        # go through the adapter path (lift+rag would otherwise answer from the passages alone).
        "LIFT_RETRIEVAL__ADAPTER_MIN_PROBABILITY": "0",
    }
    env.pop("LIFT_AGENT_MODEL", None)  # the offline, scripted tool caller

    def run(script: str, *args: str) -> str:
        done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    return run


def test_examples_are_short():
    for script in EXAMPLES.glob("*.py"):
        assert len(script.read_text().splitlines()) <= 85, script.name


def test_the_agent_example(run_example):
    out = run_example("agent_with_memory.py", "Who kept the Tamsin Light?")
    assert "agent calls lift_absorb(" in out and "agent calls lift_memory({'question': 'Who kept the Tamsin Light?'})" in out
    assert "lift_absorb (success): Stored \"Harrowmere: a short history of an island town\"" in out
    assert "route absorb" in out and "Absorbed into an adapter" in out  # over the tiny model's window
    assert "lift_memory (success)" in out and "Sources (from its adapter and retrieved passages)" in out
    assert "\nanswer: " in out


def test_the_research_assistant_example(run_example):
    out = run_example("research_assistant.py", "--max-sub-questions", "1")
    for name in ("ferry_line.md", "kelp_glass.md", "tidal_station.md"):
        assert f"{name}: context (in context)" in out
    assert "# How does Vessmoor earn its living, and where does its electricity come from?" in out
    assert "## Sources\n[1] " in out


def test_the_long_session_example_resumes(run_example, tmp_path):
    db = str(tmp_path / "session.sqlite")
    first = run_example("long_session.py", "--db", db, "Who built the Tamsin Light?")
    assert "Harrowmere: a short history of an island town: absorb" in first and ": 2 messages" in first
    second = run_example("long_session.py", "--db", db, "When was it automated?")
    assert ": 4 messages" in second
    assert second.index("you: Who built the Tamsin Light?") < second.index("you: When was it automated?")
