"""Run LangGraph's own store tests against LiftStore.

    .venv/bin/python scripts/langgraph_store_tests.py PATH/TO/langgraph [pytest options]

The installed langgraph ships no store conformance suite, so this takes the store tests of a langgraph source
checkout (``libs/checkpoint-sqlite/tests/test_store.py`` and ``test_async_store.py``, written for SqliteStore,
and ``libs/checkpoint/tests/test_store.py``, written for InMemoryStore), copies them into a scratch folder with
the store they build swapped for a ``LiftStore`` over a scratch memory on the default model, and runs them with
pytest. Tests that use no store, or only SQLite's internals, run as they are.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {  # in the checkout -> in the scratch folder
    "libs/checkpoint-sqlite/tests/test_store.py": "tests/test_store.py",
    "libs/checkpoint-sqlite/tests/test_async_store.py": "tests/test_async_store.py",
    "libs/checkpoint/tests/test_store.py": "tests/test_memory_store.py",
    "libs/checkpoint/tests/embed_test_utils.py": "tests/embed_test_utils.py",
}

CONFTEST = '''
import contextlib, os, tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_LOADED = None
_MADE = [0]  # LiftStores made so far
_BEFORE, _ON_LIFT, _OUTCOME = {}, {}, {}


def lift_store(*_, index=None, fields=None, **__):
    """A LiftStore over a fresh memory in a scratch folder, on the default model (loaded once). A store the test
    configures with an embedding index (``index``, or ``text_fields``) gets its text fields ("$" by default, the
    whole value, as theirs); the test's own embedding function is not used: the memory embeds."""
    global _LOADED
    _MADE[0] += 1
    from lift_tool.config import Settings
    from lift_tool.lift import Lift
    from lift_tool.models import load_model
    from lift_tool.store import LiftStore

    home = Path(tempfile.mkdtemp(prefix="lift-store-test-"))
    settings = Settings(home=home, device="cpu", cache_dir=home / "cache")
    if _LOADED is None:
        _LOADED = load_model(settings=settings)
    if index is not None:
        fields = index.get("fields") or ["$"]
    options = {"fields": fields} if fields is not None else {}
    return LiftStore(Lift(settings, model=_LOADED), measure_throughput=False, background=False, **options)


@contextlib.contextmanager
def lift_vector_store(*_, text_fields=None, **__):
    yield lift_store(fields=text_fields or ["$"])


@contextlib.asynccontextmanager
async def alift_vector_store(*_, text_fields=None, **__):
    yield lift_store(fields=text_fields or ["$"])


@pytest.fixture
def store():
    return lift_store()


def pytest_runtest_setup(item):
    _BEFORE[item.nodeid] = _MADE[0]


def pytest_runtest_teardown(item):
    _ON_LIFT[item.nodeid] = _MADE[0] > _BEFORE[item.nodeid]


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _OUTCOME.setdefault(report.nodeid, "error" if report.when != "call" and report.failed else report.outcome)


def pytest_terminal_summary(terminalreporter):
    for on_lift, what in ((True, "on a LiftStore"), (False, "without a LiftStore (SQLite or InMemoryStore internals)")):
        outcomes = [o for node, o in _OUTCOME.items() if _ON_LIFT.get(node, False) == on_lift]
        counts = ", ".join(f"{outcomes.count(o)} {o}" for o in ("passed", "failed", "error", "skipped") if outcomes.count(o))
        terminalreporter.write_line(f"{len(outcomes)} tests ran {what}: {counts}")
        if on_lift:
            for node, o in _OUTCOME.items():
                if _ON_LIFT.get(node) and o != "passed":
                    terminalreporter.write_line(f"    {o}: {node}")
'''


def rewrite(text: str) -> str:
    """The test module with its stores made LiftStores."""
    text = re.sub(r"\ndef store\(", "\ndef _their_store(", text)  # the conftest's store fixture wins
    text = re.sub(r"\nasync def store\(", "\nasync def _their_store(", text)
    text = re.sub(r"\ndef create_vector_store\(", "\ndef _their_create_vector_store(", text)
    text = re.sub(r"\nasync def create_vector_store\(", "\nasync def _their_create_vector_store(", text)
    text = text.replace("from pytest_mock import MockerFixture", "MockerFixture = object")
    text = re.sub(r"(?<![\w.])InMemoryStore\(", "lift_store(", text)
    is_async = "AsyncSqliteStore" in text
    return text + ("\n\nfrom conftest import lift_store, alift_vector_store as create_vector_store  # noqa\n" if is_async
                   else "\n\nfrom conftest import lift_store, lift_vector_store as create_vector_store  # noqa\n")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    checkout = Path(sys.argv[1])
    scratch = Path(tempfile.mkdtemp(prefix="langgraph-store-tests-"))
    (scratch / "tests").mkdir()
    (scratch / "tests" / "__init__.py").write_text("")
    (scratch / "conftest.py").write_text(CONFTEST)
    (scratch / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    for source, target in SOURCES.items():
        text = (checkout / source).read_text()
        (scratch / target).write_text(text if target.endswith("utils.py") else rewrite(text))
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfE", *sys.argv[2:], "tests"]
    return subprocess.call(command, cwd=scratch, env={**__import__("os").environ, "PYTHONPATH": f"{scratch}:{ROOT}"})


if __name__ == "__main__":
    sys.exit(main())
