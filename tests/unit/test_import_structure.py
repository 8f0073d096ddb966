"""meshflow's packages import each other without a cycle (ARCHITECTURE: layers, not a knot).

Every import of a meshflow module counts, at module level or inside a function (a lazy import
hides a dependency, it does not remove it); imports under ``if TYPE_CHECKING:`` do not. Units
are the subpackages (``meshflow.gateway``) and the top-level modules (``meshflow.processes``).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import meshflow

ROOT = Path(meshflow.__file__).parent


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for child in node.body
        for sub in ast.walk(child)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                keep = len(base) - node.level + (path.name == "__init__.py")
                found.add(".".join(base[:keep] + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name.startswith("meshflow.")}


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if "proto" in parts:
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module == "meshflow":
            continue
        here = _unit(module)
        for target in _imports(path, module):
            there = _unit(target)
            if there not in (here, "meshflow.proto"):
                graph.setdefault(here, set()).add(there)
    return graph


def test_no_import_cycle_between_meshflow_packages() -> None:
    graph = package_graph()
    assert "meshflow.flow" in graph and "meshflow.processes" in graph["meshflow.flow"]
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " <- ".join(exc.args[1])  # graphlib lists each node before its importer
        raise AssertionError(f"import cycle (A <- B: B imports A): {cycle}") from None


def test_the_fork_server_imports_no_meshflow_package() -> None:
    # it runs `python -m meshflow` by name: importing the CLI would close a cycle
    assert package_graph().get("meshflow.forkserver", set()) == set()
