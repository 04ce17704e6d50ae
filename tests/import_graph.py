"""Reads the `import` statements of src/ctl and finds the circles and the upward imports among them.

Every import counts, those inside functions and ``TYPE_CHECKING`` blocks too: a function-level or
type-only import is how a circle hides, and it still couples the two modules.

Run it as a script to print the graph's circles and upward imports:
``PYTHONPATH=src python tests/import_graph.py``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "ctl"
SRC = Path(__file__).resolve().parents[1] / "src"

#: The layers of src/ctl, lowest first; a module may import its own layer or any layer below.
#: A key names a module or a package (its submodules belong to it unless a longer key names them).
LAYERS: dict[str, int] = {
    "ctl.errors": 0,
    "ctl.quiet": 0,
    "ctl.io": 1,
    "ctl.table_io": 1,
    "ctl.methods": 1,
    "ctl.run_files": 1,
    "ctl.received": 1,
    "ctl.conf": 1,
    "ctl.overrides": 2,
    "ctl.data": 2,
    "ctl.metrics": 2,
    "ctl.models": 3,
    "ctl.training": 4,
    "ctl.serve": 5,
    "ctl.report": 5,
    "ctl.sweep_jobs": 6,
    "ctl.app": 6,
    "ctl.cli": 7,
    "ctl.data.cli": 7,
    "ctl.serve.cli": 7,
    "ctl.report.cli": 7,
    "ctl": 0,  # ctl/__init__.py
}

def module_files(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__``)."""
    modules: dict[str, Path] = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` names or lies in (``ctl.data.schema.Feature`` -> schema)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> dict[str, list[str]]:
    """The package modules ``module`` imports, each with the names it imports from it (``*`` for a
    plain ``import x``), keyed by the module that holds them."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: dict[str, list[str]] = {}
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                if target is not None and alias.name.split(".")[0] == PACKAGE:
                    found.setdefault(target, []).append("*")
            continue
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        if origin.split(".")[0] != PACKAGE:
            continue
        for alias in node.names:
            # `from ctl.data import dataset` imports a module; `from ctl.io import write` a name
            submodule = f"{origin}.{alias.name}"
            if submodule in modules:
                found.setdefault(submodule, []).append("*")
                continue
            target = _resolve(origin, modules)
            if target is not None:
                found.setdefault(target, []).append(alias.name)
    found.pop(module, None)
    return found


def import_graph(src: Path = SRC) -> dict[str, dict[str, list[str]]]:
    modules = module_files(src)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int:
    """The layer of the longest key of LAYERS that names ``module`` or a package holding it."""
    name = module
    while name not in LAYERS:
        name = name.rpartition(".")[0]
    return LAYERS[name]


def upward_imports(graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """Each import of a module from a higher layer, or of another module's private name."""
    found = []
    for module, targets in sorted(graph.items()):
        for target, names in sorted(targets.items()):
            if layer_of(target) > layer_of(module):
                found.append(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})")
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    found.append(f"{module} imports the private name {target}.{name}")
    return found


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted, in name order.

    A package imports nothing of its own submodules' circles just by being their parent, so a
    package ``__init__`` counts only through the imports written in it.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


if __name__ == "__main__":
    graph = import_graph()
    for component in cycles(graph):
        print("circle:", " <-> ".join(component))
    for line in upward_imports(graph):
        print("upward:", line)
