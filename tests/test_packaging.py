"""The package as a user meets it: its import names do not collide with the user's own modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_a_users_own_memory_and_graphs_do_not_shadow_the_package(tmp_path, tiny_model_dir):
    """memory/ and graphs/ are imported as lift_tool.memory and lift_tool.graphs, so a working directory with
    its own memory.py and graphs/ package (first on sys.path) changes nothing."""
    work = tmp_path / "project"
    (work / "graphs").mkdir(parents=True)
    (work / "memory.py").write_text("raise ImportError('the user memory.py was imported')\n")
    (work / "graphs" / "__init__.py").write_text("raise ImportError('the user graphs package was imported')\n")
    env = {**os.environ, "LIFT_HOME": str(tmp_path / "home"), "LIFT_MODEL": str(tiny_model_dir), "LIFT_DEVICE": "cpu"}

    code = ("from lift_tool import Lift; import lift_tool.graphs.router; "
            "lift = Lift(); entry = lift.index('The lighthouse is red.', title='Lighthouse'); "
            "print([d.title for d in lift.documents()])")
    done = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['Lighthouse']"

    lift = Path(sys.executable).with_name("lift")
    listed = subprocess.run([str(lift), "list"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "Lighthouse" in listed.stdout
