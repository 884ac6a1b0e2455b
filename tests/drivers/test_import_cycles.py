"""No import cycle among the driver modules, lazy (function-level) imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import nvmlab.drivers

DRIVERS = Path(next(iter(nvmlab.drivers.__path__)))


def driver_imports() -> dict[str, set[str]]:
    """Module -> the ``nvmlab.drivers`` modules it imports anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for path in sorted(DRIVERS.glob("*.py")):
        name = f"nvmlab.drivers.{path.stem}"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {
            t
            for t in targets
            if t.startswith("nvmlab.drivers.") and t != name and t.count(".") == 2
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_scan_sees_lazy_imports() -> None:
    graph = driver_imports()
    assert "nvmlab.drivers.transport" in graph["nvmlab.drivers.espec"]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_no_import_cycle_among_the_drivers() -> None:
    cycle = find_cycle(driver_imports())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
