"""The modules keep the layering the README documents: no upward import, no cycle.

The layer of each module is read from the README's "How the code is laid out"
table, so the documentation and this check cannot drift apart.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ckptname"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|")


def documented_layers() -> dict[str, int]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for line in section.splitlines():
        m = ROW.match(line)
        if m:
            layers[m.group(2).removesuffix(".py")] = int(m.group(1))
    return layers


def imports_of(path: Path) -> set[str]:
    """The ckptname modules a module imports, at any depth (TYPE_CHECKING and lazy ones too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # `from . import x`: a module of the package, else a name of __init__
                found.update(
                    alias.name if (PACKAGE / f"{alias.name}.py").exists() else "__init__"
                    for alias in node.names
                )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ckptname."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ckptname."):
                    found.add(alias.name.split(".")[1])
    found.discard(path.stem)
    return found


def graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path) for path in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_documented_layer():
    assert sorted(graph()) == sorted(documented_layers())


def test_no_module_imports_a_higher_layer():
    layers = documented_layers()
    upward = [
        f"{module} (layer {layers[module]}) imports {target} (layer {layers[target]})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if layers[target] > layers[module]
    ]
    assert upward == []


def test_imports_have_no_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_counting_best_and_save_transaction_load_no_keras():
    code = (
        "import sys, json\n"
        "import ckptname._schedule, ckptname._best, ckptname._fields, ckptname._transaction\n"
        "import ckptname._cluster\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('keras', 'tensorflow', 'jax', 'torch'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
