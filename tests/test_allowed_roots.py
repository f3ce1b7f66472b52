"""Files an agent may have read: only under settings.allowed_roots (LIFT_ALLOWED_ROOTS), links followed; the CLI,
run by the user in their own shell, reads any file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lift_tool.config import Settings
from lift_tool.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SECRET = "# Keys\n\nThe vault code of the Bellmoor lighthouse is 4711."


@pytest.fixture
def layout(tmp_path):
    """An allowed folder holding a note and a link that leads out of it, and a secret outside it."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir(), outside.mkdir()
    (allowed / "note.md").write_text("# Note\n\nThe ferry leaves at nine.")
    (outside / "id_rsa").write_text(SECRET)
    (allowed / "innocent.md").symlink_to(outside / "id_rsa")
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    return allowed, outside


@pytest.fixture
def lift(tiny_settings, tmp_path, layout):
    from lift_tool.lift import Lift

    allowed, _ = layout
    return Lift(tiny_settings.model_copy(update={"allowed_roots": [allowed], "cache_dir": tmp_path / "cache"}))


def test_the_setting_reads_a_list_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFT_ALLOWED_ROOTS", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert Settings().allowed_roots == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.delenv("LIFT_ALLOWED_ROOTS")
    default = Settings().allowed_roots
    assert Path.cwd() in default and len(default) == 2  # the working directory and the documents folder


def test_the_absorb_tool_reads_only_allowed_files(lift, layout):
    from lift_tool.tool import AbsorbDocument

    allowed, outside = layout
    tool = AbsorbDocument(lift=lift, measure_throughput=False)

    def absorb(path: str):
        return tool.invoke({"type": "tool_call", "id": "c", "name": tool.name, "args": {"path": path, "route": "retrieve"}})

    assert absorb(str(allowed / "note.md")).status == "success"
    for path in (outside / "id_rsa", allowed / "innocent.md", allowed / "escape" / "id_rsa",
                 allowed / ".." / "outside" / "id_rsa", Path("~/.ssh/id_rsa")):
        message = absorb(str(path))
        assert message.status == "error" and "LIFT_ALLOWED_ROOTS" in message.content, (path, message.content)
        assert "4711" not in message.content
    assert [doc.title for doc in lift.documents()] == ["Note"]  # nothing of the secret was stored


def test_the_router_graph_reads_only_allowed_files(lift, layout, tiny_model_dir, tmp_path):
    from lift_tool.graphs.router import build_graph
    from lift_tool.routing import read_source

    allowed, outside = layout
    for source in (str(outside / "id_rsa"), str(allowed / "innocent.md"), str(outside / "missing.md")):
        with pytest.raises(InputError, match="LIFT_ALLOWED_ROOTS"):
            read_source(lift, source)  # refused whether the file exists or not
    assert read_source(lift, str(allowed / "note.md")).title == "Note"
    assert read_source(lift, "A one-line text.").text == "A one-line text."  # a text is still a text

    graph = build_graph()
    configurable = {"model": str(tiny_model_dir), "home": str(lift.settings.home), "device": "cpu",
                    "settings": {"cache_dir": str(tmp_path / "cache"), "allowed_roots": [str(allowed)]}}
    out = graph.invoke({"source": str(allowed / "innocent.md")}, {"configurable": configurable})
    assert out["status"] == "error" and "LIFT_ALLOWED_ROOTS" in out["error"]


def test_the_cli_reads_any_file(tmp_path, tiny_model_dir, layout):
    _, outside = layout
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIFT_HOME": str(tmp_path / "home"),
           "LIFT_ALLOWED_ROOTS": str(tmp_path / "allowed"), "LIFT_TRAINING__EPOCHS": "0.05",
           "LIFT_TRAINING__MIN_STEPS": "1"}
    result = subprocess.run([sys.executable, "-m", "lift_tool.cli", "--model", str(tiny_model_dir), "absorb",
                             str(outside / "id_rsa"), "--quiet"], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr


def test_the_research_assistant_lists_only_an_allowed_folder(lift, layout, tiny_model_dir, tmp_path):
    from lift_tool.graphs.research_assistant import graph

    allowed, outside = layout
    configurable = {"model": str(tiny_model_dir), "home": str(lift.settings.home), "device": "cpu",
                    "settings": {"cache_dir": str(tmp_path / "cache"), "allowed_roots": [str(allowed)]}}
    for folder in (outside, allowed / "escape"):  # outside, directly or through a link
        out = graph.invoke({"question": "What is the vault code?", "folder": str(folder)},
                           {"configurable": configurable})
        assert "LIFT_ALLOWED_ROOTS" in out["report"] and out["documents"] == [], out["report"]
        assert "id_rsa" not in out["report"]  # not even the names of its files
    assert lift.documents() == []
