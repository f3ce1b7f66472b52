"""Fuzzing what lift-tool takes from outside: the arguments an agent passes to the LangChain tools, and the fields of
an archive given to `lift import`. Seeded, so that a failure is found again; each case is printed when it fails.

- Tools: every call, whatever the types, sizes and shapes of its arguments, returns a ToolMessage that says what
  happened or what to fix; none raises, and none ends in the tools' catch-all for an unexpected exception (a raw
  AttributeError, TypeError, KeyError... reported as "<tool> failed (...)").
- Archives: every import is refused with a lift-tool error that leaves the memory exactly as it was, or succeeds
  whole (a document whose text matches its id, with intact adapters, and a memory that verify calls intact).
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest
from helpers_adapters import build_lora, store_adapter, tree_bytes

from lift_tool.errors import LiftError, StorageError

SEED = 27
DEEP = [[[[[[[[[[[]]]]]]]]]]]
ODD_VALUES = [
    None, True, False, 0, -1, 2**64, -(2**63), 3.5, float("nan"), float("inf"), "", " ", "\n\t", "\x00", "a\x00b",
    "\ud800", "x\udcff", "e\u0301", "\u202eevil", "🙂🙂", "\x1b[2J", "../../etc/passwd", "/dev/zero", "~", ".",
    "x" * 5000, "word " * 2000, "0" * 64, "f" * 24, [], [None], ["a", 1], [[]], {}, {"a": {"b": [1, {"c": None}]}},
    DEEP, list(range(100)),
]
LIGHTHOUSE = ("# The Bellmoor lighthouse\n\nThe Bellmoor lighthouse stands on Gull Rock at the mouth of the Fenn "
              "estuary. It was built in 1901 by the engineer Ada Quill and is painted red and white.")


def odd_text(rng: random.Random) -> str:
    """A string of odd characters: controls, lone surrogates, combining marks, right-to-left marks, emoji, CJK."""
    pool = ["a", " ", "\n", "\x00", "\x07", "\x1b", "\ud800", "\udfff", "\u0301", "\u202e", "\ufeff", "🙂", "中",
            "/", "..", "%s", "{}", "'", '"', "\\"]
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))


def odd_value(rng: random.Random) -> object:
    return odd_text(rng) if rng.random() < 0.3 else rng.choice(ODD_VALUES)


# ------------------------------------------------------------------------------------------------ tools

TOOL_FIELDS = {
    "lift_memory": ["question", "documents", "mode"],
    "lift_absorb": ["text", "path", "title", "route"],
    "lift_list": [],
    "lift_forget": ["document"],
}
PLAUSIBLE = {
    "question": ["Who built the Bellmoor lighthouse?", "What colour is it?"],
    "documents": [["The Bellmoor lighthouse"], "Bellmoor", ["no such document"], []],
    "mode": ["auto", "rag", "context", "base", "lift"],
    "text": [LIGHTHOUSE, "Too short."],
    "path": ["README.md", "no-such-file.txt"],
    "title": ["Bellmoor", None],
    "route": ["auto", "context", "retrieve"],
    "document": ["The Bellmoor lighthouse", "Bellmoor"],
}


def tool_arguments(rng: random.Random, fields: list[str]) -> object:
    """A tool call's ``args``: mostly an object with some of the tool's fields (plausible or odd values) and perhaps a
    field it does not have; sometimes not an object at all."""
    if rng.random() < 0.1:
        return odd_value(rng)
    args = {}
    for name in fields:
        if rng.random() < 0.7:
            args[name] = rng.choice(PLAUSIBLE[name]) if rng.random() < 0.5 else odd_value(rng)
    if rng.random() < 0.2:
        args[rng.choice(["query", "extra", "", "\ud800", "args"])] = odd_value(rng)
    return args


@pytest.fixture
def tools(tiny_settings, tmp_path, monkeypatch):
    from lift_tool.lift import Lift
    from lift_tool.tool import LiftToolkit

    monkeypatch.chdir(tmp_path)  # relative paths from the fuzz land in an empty folder (an allowed root)
    training = tiny_settings.training.model_copy(update={"epochs": 0.05, "batch_tokens": 2048, "min_steps": 1})
    lift = Lift(tiny_settings.model_copy(update={"training": training, "cache_dir": tmp_path / "cache",
                                                 "max_new_tokens": 4}))
    return lift, LiftToolkit(lift=lift, budget_seconds=1, measure_throughput=False).get_tools()


def test_tool_calls_with_any_arguments_get_a_message_never_a_raw_exception(tools):
    lift, toolkit = tools
    rng = random.Random(SEED)
    by_name = {tool.name: tool for tool in toolkit}
    by_name["lift_absorb"].invoke({"text": LIGHTHOUSE})  # something in memory, so that questions reach the model
    failures = []
    for case in range(300):
        tool = by_name[rng.choice(sorted(TOOL_FIELDS))]
        args = tool_arguments(rng, TOOL_FIELDS[tool.name])
        try:
            message = tool.invoke({"type": "tool_call", "id": f"call-{case}", "name": tool.name, "args": args})
        except Exception as err:  # noqa: BLE001 - any exception out of a tool is the failure looked for
            failures.append(f"{tool.name}({args!a:.300}) raised {type(err).__name__}: {err}")
            continue
        content = message.content
        if not (isinstance(content, str) and content.strip() and message.status in ("success", "error")):
            failures.append(f"{tool.name}({args!a:.300}) answered {message!a:.300}")
        elif f"{tool.name} failed (" in content:
            failures.append(f"{tool.name}({args!a:.300}): {content!a:.300}")
    assert not failures, "\n".join(failures)
    assert lift.verify().ok


# --------------------------------------------------------------------------------------------- archives

INDEX = "lift-memory.json"
DOCUMENT_FIELDS = ["doc_id", "title", "tokens", "route", "created"]


def mutate(rng: random.Random, contents: dict) -> dict:
    """One to three changes to an archive's index: a field given an odd value, removed or added, an adapter key
    changed or repeated, or the whole index replaced by something else."""
    if rng.random() < 0.03:
        return odd_value(rng)
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(["top", "document", "adapters"])
        if target == "document" and isinstance(contents.get("document"), dict):
            document = contents["document"]
            name = rng.choice(DOCUMENT_FIELDS + ["extra"])
            if rng.random() < 0.2:
                document.pop(name, None)
            else:
                document[name] = odd_value(rng)
        elif target == "adapters" and isinstance(contents.get("adapters"), list) and contents["adapters"]:
            keys = contents["adapters"]
            choice = rng.random()
            if choice < 0.3:
                keys.append(keys[0])  # the same adapter twice
            elif choice < 0.5:
                keys.clear()
            else:
                keys[0] = odd_value(rng)
        else:
            name = rng.choice(["format", "version", "document", "text_sha256", "adapters", "extra"])
            if rng.random() < 0.2:
                contents.pop(name, None)
            else:
                contents[name] = odd_value(rng)
    return contents


def write_archive(members: dict[str, bytes], file: Path) -> None:
    with tarfile.open(file, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def memory_state(registry) -> tuple:
    """Everything the memory holds: its documents and adapters, and every file under its folders."""
    documents = [(d.doc_id, d.title, d.route, [a.key for a in d.adapters]) for d in registry.list_documents()]
    files = {name: tree_bytes(registry.home / name) for name in ("documents", "adapters", "staging", "adding",
                                                                  "forgetting") if (registry.home / name).is_dir()}
    return documents, files


def test_an_archive_with_any_fields_is_refused_cleanly_or_imported_whole(tiny_model_dir, tmp_path):
    from lift_tool.memory.registry import Registry

    adapter = build_lora(tiny_model_dir, tmp_path / "lora", seed=5)
    source = Registry(tmp_path / "source")
    entry = store_adapter(source, adapter, LIGHTHOUSE, "Bellmoor", "fp-base")
    with tarfile.open(source.export("Bellmoor", tmp_path / "bellmoor.tar.gz")) as archive:
        members = {member.name: archive.extractfile(member).read() for member in archive}
    memory = Registry(tmp_path / "memory")
    store_adapter(memory, adapter, "Another document, already in the memory. " * 5, "Other", "fp-base")
    before = memory_state(memory)

    rng = random.Random(SEED)
    failures, refused, imported = [], 0, 0
    for case in range(300):
        contents = mutate(rng, json.loads(members[INDEX]))
        file = tmp_path / "fuzzed.tar.gz"
        try:
            write_archive({**members, INDEX: json.dumps(contents).encode()}, file)
        except (ValueError, RecursionError):  # not writable as JSON (a lone surrogate): nothing to import
            continue
        try:
            imported_entry = memory.import_archive(file)
        except LiftError as err:
            refused += 1
            if isinstance(err, StorageError):  # the memory is not at fault: the archive is
                failures.append(f"case {case} ({contents!a:.300}): blamed the memory: {err}")
            if memory_state(memory) != before:
                failures.append(f"case {case} ({contents!a:.300}): refused ({err}) but changed the memory")
            continue
        except Exception as err:  # noqa: BLE001 - a raw exception is the failure looked for
            failures.append(f"case {case} ({contents!a:.300}): raised {type(err).__name__}: {err}")
            continue
        imported += 1
        report = memory.verify()
        if not (imported_entry.doc_id == entry.doc_id and report.ok
                and memory.document_text(entry.doc_id) == LIGHTHOUSE):
            failures.append(f"case {case} ({contents!a:.300}): imported, but {report.problems()}")
        memory.remove(imported_entry.doc_id)
        if memory_state(memory) != before:
            failures.append(f"case {case} ({contents!a:.300}): forgetting the import did not restore the memory")
    print(f"\narchive fuzz: {refused} refused, {imported} imported whole")
    assert not failures, "\n".join(failures)
    assert refused > 100 and imported > 10  # the fuzz reached both outcomes
