"""The package's imports run one way: memory at the bottom, the engine above it, the faces (graphs, LangChain
tools and models, CLI, demo, evaluation) on top. ``errors`` and ``files`` are leaves every layer may use.

The test reads every module's import statements (those under ``if TYPE_CHECKING`` too) without running them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# where each importable package lives in the repository (pyproject.toml's package-dir)
PACKAGE_DIRS = {"lift_tool": ROOT / "lift_tool", "lift_tool.memory": ROOT / "memory", "lift_tool.graphs": ROOT / "graphs"}
LEAVES = {"lift_tool", "lift_tool.errors", "lift_tool.files"}
FACES = ("lift_tool.graphs", "lift_tool.tool", "lift_tool.chat_model", "lift_tool.scripted_model", "lift_tool.cli", "lift_tool.demo",
         "lift_tool.eval", "lift_tool.retriever", "lift_tool.store")
LAYERS = {"memory": 0, "engine": 1, "faces": 2}


def layer(module: str) -> str | None:
    """Which layer a lift_tool module belongs to; None for leaves and for modules outside the package."""
    if module in LEAVES or not (module == "lift_tool" or module.startswith("lift_tool.")):
        return None
    if module == "lift_tool.memory" or module.startswith("lift_tool.memory."):
        return "memory"
    if any(module == face or module.startswith(face + ".") for face in FACES):
        return "faces"
    return "engine"


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative imports resolved against ``name``."""
    is_package = path.name == "__init__.py"
    result = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            result += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from package import module` imports the module
            result += [(node.lineno, f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else (node.lineno, base)
                       for alias in node.names]
    return result


MODULES = modules()


def test_the_layer_map_knows_every_module():
    assert {"lift_tool.memory.pool", "lift_tool.graphs.router", "lift_tool.lift", "lift_tool.cli"} <= set(MODULES)
    assert layer("lift_tool.memory.pool") == "memory" and layer("lift_tool.graphs.router") == "faces"
    assert layer("lift_tool.lift") == "engine" and layer("lift_tool.errors") is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_downward(name):
    own = layer(name)
    upward = [f"line {line}: {module} ({layer(module)})" for line, module in imports(name, MODULES[name])
              if own is not None and layer(module) is not None and LAYERS[layer(module)] > LAYERS[own]]
    assert not upward, f"{name} ({own}) imports from a layer above it: " + "; ".join(upward)


def test_leaves_import_nothing_of_the_project():
    for leaf in LEAVES - {"lift_tool"}:
        assert not [m for _, m in imports(leaf, MODULES[leaf]) if layer(m) is not None], leaf


def test_lift_tool_stays_light():
    code = ("import sys, lift_tool, lift_tool.lift; "
            "heavy = [m for m in ('lift_tool.tool', 'lift_tool.chat_model', 'langchain_core', 'torch', 'lift_tool.graphs') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_the_public_names_import_from_the_package():
    code = ("import lift_tool; from lift_tool import Lift, LiftMemory, LiftToolkit, LiftChatModel, Settings; "
            "print(all(n in dir(lift_tool) for n in ('Lift', 'LiftMemory', 'LiftToolkit', 'LiftChatModel', 'Settings')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "True"
