"""SIGKILL at every step of absorb, index, forget, import and repair, in real processes (tests/fault_injection.py).

After each kill: `verify` sees whatever the kill left (it never calls intact a memory that is not), and `verify
--repair` mends it with nothing left over and no absorbed document lost: every operation ends as if it had run whole
or not at all, in the registry (index rows, folders, texts, adapters) and in the Chroma store alike.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_adapters import build_lora, doc_id_for

SERVER = Path(__file__).with_name("fault_injection.py")
TEXTS = {
    "A": "# Alpha\n\nThe Alpha canal was dug in 1841 by Agatha Moorcroft and is fourteen kilometres long.",
    "B": "# Beta\n\nThe Beta lighthouse on Gull Rock is painted red and white and was built in 1901 by Ada Quill.",
    "C": "# Gamma\n\nThe Gamma ferry to Quillon leaves at nine every morning and comes back at six in the evening.",
    "D": "# Delta\n\nThe Delta orchard grows forty kinds of apple, and its cider press dates from the year 1887.",
    "X": "# Xi\n\nThe Xi observatory stands on Harlow Hill, and its telescope was ground by hand in the year 1923.",
    "Y": "# Upsilon\n\nThe Upsilon library lends maps of the whole coast and opens on Tuesdays and Saturdays only.",
}
ID = {name: doc_id_for(text) for name, text in TEXTS.items()}
TITLES = {"A": "Alpha", "B": "Beta", "C": "Gamma", "D": "Delta", "X": "Xi", "Y": "Upsilon"}


class Server:
    """The fault-injection server: one JSON command per line, one JSON reply per line."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    def send(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        assert "failure" not in reply, reply["failure"]
        return reply

    def run(self, operation: str, home: Path, kill_at: int | None = None, **arguments) -> dict:
        reply = self.send(do="run", operation=operation, home=str(home), kill_at=kill_at, **arguments)
        assert reply["killed"] == (kill_at is not None), reply
        return reply.get("result", {})

    def check(self, home: Path) -> dict:
        return self.send(do="check", home=str(home))["result"]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    adapter = build_lora(tiny_model_dir, tmp_path_factory.mktemp("fault-adapter"), seed=3)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(SERVER), str(tiny_model_dir), str(adapter)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "ready"
        yield Server(process)
    finally:
        process.stdin.close()
        process.wait(timeout=60)


def absorbed(*names: str) -> dict:
    return {ID[name]: 1 for name in names}


def indexed(*names: str) -> dict:
    return {ID[name]: 0 for name in names}


BEFORE = {**absorbed("A", "B"), **indexed("C")}
# Each operation on a copy of the same memory (Alpha and Beta absorbed, Gamma indexed), and the memories it may leave
# once repaired: as before it ran, or as after it ran whole.
CASES = {
    "absorb": ({"text": TEXTS["X"], "title": TITLES["X"]}, [BEFORE, {**BEFORE, **absorbed("X")}]),
    "index": ({"text": TEXTS["Y"], "title": TITLES["Y"]}, [BEFORE, {**BEFORE, **indexed("Y")}]),
    "forget": ({"ref": "Alpha"}, [BEFORE, {**absorbed("B"), **indexed("C")}]),
    "import": ({}, [BEFORE, {**BEFORE, **absorbed("D")}]),
    # On a memory that needs repair (see damage()): whatever the kill, Alpha and Beta stay absorbed.
    "repair": ({}, [absorbed("A", "B")]),
}


def damage(home: Path, server: Server) -> None:
    """What interrupted operations leave, for repair to mend: Alpha's rows lost (its adapter folder and text stay),
    Beta's chunks lost, Gamma's forget interrupted after its rows went, an add's staging folder left by a dead process."""
    server.run("unindex", home, doc_id=ID["B"])
    with sqlite3.connect(home / "registry.sqlite") as conn:
        for name in ("A", "C"):
            conn.execute("DELETE FROM adapters WHERE doc_id = ?", (ID[name],))
            conn.execute("DELETE FROM documents WHERE doc_id = ?", (ID[name],))
    (home / "forgetting" / ID["C"]).write_bytes(b"")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = home / "staging" / f"{ended.stdout.strip()}-0123456789abcdef"
    leftover.mkdir()
    (leftover / "adapter_model.safetensors").write_bytes(b"half written")


def problems_with(state: dict, allowed: list[dict]) -> list[str]:
    """What is wrong with a memory's state, seen directly: [] when it is one of the ``allowed`` ones and whole."""
    found = []
    if state["documents"] not in allowed:
        named = {doc_id: name for name, doc_id in ID.items()}
        found.append("documents " + str({named.get(d, d): n for d, n in state["documents"].items()}))
    if not state["texts_match"]:
        found.append("a text that is missing or does not match its id")
    found += [f"damaged adapter {line}" for line in state["damaged"]]
    if state["chunks"] != sorted(state["documents"]):
        found.append(f"chunks of {len(state['chunks'])} documents for {len(state['documents'])} documents")
    folders = state["folders"]
    if len(folders.get("adapters", [])) != sum(state["documents"].values()):
        found.append(f"adapter folders {folders.get('adapters')}")
    if len(folders.get("documents", [])) != len(state["documents"]):
        found.append(f"texts {folders.get('documents')}")
    if folders.get("staging") or folders.get("forgetting"):
        found.append(f"leftovers {folders.get('staging')} {folders.get('forgetting')}")
    return found


@pytest.mark.integration
def test_a_kill_at_any_step_is_seen_by_verify_and_mended_by_repair(server, tmp_path):
    template = tmp_path / "template"
    for name in ("A", "B"):
        server.run("absorb", template, text=TEXTS[name], title=TITLES[name])
    server.run("index", template, text=TEXTS["C"], title=TITLES["C"])
    archive = tmp_path / "delta.lift.tar.gz"
    server.run("absorb", tmp_path / "elsewhere", text=TEXTS["D"], title=TITLES["D"])
    server.run("export", tmp_path / "elsewhere", ref="Delta", archive=str(archive))
    damaged = tmp_path / "damaged"
    shutil.copytree(template, damaged)
    damage(damaged, server)
    CASES["import"][0]["archive"] = str(archive)

    started, injected, held, failures, counted = time.monotonic(), 0, 0, [], {}
    for operation, (arguments, allowed) in CASES.items():
        source = damaged if operation == "repair" else template
        steps = None
        for kill_at in [None, *range(1, 1000)]:  # first the run that is not killed, which counts the steps
            if steps is not None and kill_at > steps:
                break
            home = tmp_path / f"{operation}-{kill_at}"
            shutil.copytree(source, home)
            outcome = server.run(operation, home, kill_at, **arguments)
            assert "error" not in outcome, outcome
            steps = counted[operation] = outcome["steps"] if kill_at is None else steps
            found = server.check(home)
            wrong = [f"after repair: {line}" for line in problems_with(found["after"], allowed)]
            wrong += [f"verify after repair: {line}" for line in found["after_problems"]]
            wrong += [f"left by repair: {line}" for line in found["left"]]
            if not found["found"]:  # verify called it intact: it must be
                wrong += [f"verify saw nothing, but: {line}" for line in problems_with(found["before"], allowed)]
            injected += kill_at is not None
            held += not wrong
            failures += [f"{operation}, killed before step {kill_at}: {line}" for line in wrong]
            shutil.rmtree(home)
    cases = injected + len(CASES)
    print(f"\nfault injection: {injected} kills injected, {cases} cases, {held} held, "
          f"{time.monotonic() - started:.0f} s; steps per operation: {counted}")
    assert not failures, "\n".join(failures)
    assert held == cases
