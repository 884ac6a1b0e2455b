"""Imports point down the layers (docs: architecture.md, "Layers and data flow").

Every module of every folder mapped into ``nvmlab`` is parsed (AST), and every import in
it counts: at module level, inside functions (lazy imports) and under ``TYPE_CHECKING``.
A module may import its own layer, the core and the layers the table below allows.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "setuptools"
]["package-dir"]

#: Modules of the core: they import no layer, and every layer may import them.
CORE = {
    "nvmlab",
    "nvmlab.dburl",
    "nvmlab.clock",
    "nvmlab.errors",
    "nvmlab.masking",
    "nvmlab.models",
    "nvmlab.steps",
}
#: Layers on top of everything: they may import anything.
TOP = {"jobs", "cli", "entry", "demo", "benchmarks", "testing"}
#: Layer -> the other layers it may import (besides itself and the core).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "drivers": set(),
    "mocks": set(),
    "storage": set(),
    "instruments": {"drivers"},
    "characterization": {"instruments", "drivers", "storage"},
    "tuning": {"characterization", "instruments", "drivers", "storage"},
    "analysis": {"storage", "tuning.mapping"},
}


def layer_of(module: str) -> str:
    """The layer a dotted ``nvmlab...`` module belongs to ('core', 'top' or a folder)."""
    if module in CORE:
        return "core"
    parts = module.split(".")
    assert parts[0] == "nvmlab", module
    head = parts[1]
    if head in TOP:
        return "top"
    if head in ALLOWED:
        return head
    raise AssertionError(f"{module}: no layer is defined for nvmlab.{head} (add it to the table)")


def allowed(importer: str, imported: str) -> bool:
    src, dst = layer_of(importer), layer_of(imported)
    if src == "top" or dst == "core" or src == dst:
        return True
    if dst == "top":
        return False
    return any(
        imported == f"nvmlab.{a}" or imported.startswith(f"nvmlab.{a}.") for a in ALLOWED[src]
    )


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for import_name, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for py in base.rglob("*.py"):
            rel = py.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([import_name, *parts])
            # a subpackage folder mapped on its own (nvmlab.drivers under drivers/) is not
            # also a module of its parent's folder
            found.setdefault(name, py)
    return found


def imports_of(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every nvmlab import in the file, lazy ones included."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from nvmlab import demo`` imports the module nvmlab.demo
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    known = modules()
    result = []
    for line, target in found:
        if not target.startswith("nvmlab"):
            continue
        if target not in known and target.rpartition(".")[0] in known:
            continue  # ``from nvmlab.x import some_name``: the module is already listed
        result.append((line, target))
    return result


def violations() -> list[str]:
    problems = []
    for name, path in sorted(modules().items()):
        for line, target in imports_of(name, path):
            if not allowed(name, target):
                rel = path.relative_to(ROOT)
                problems.append(
                    f"{rel}:{line}: {name} ({layer_of(name)}) imports {target} ({layer_of(target)})"
                )
    return problems


def test_every_import_points_down_the_layers() -> None:
    problems = violations()
    assert not problems, "imports pointing up the layers:\n" + "\n".join(problems)


def test_the_rules_catch_an_upward_import() -> None:
    # the checker itself: the two imports the consolidation issue found, and legal ones
    assert not allowed("nvmlab.drivers.benchmarks", "nvmlab.instruments.station")
    assert not allowed("nvmlab.instruments.pytest_plugin", "nvmlab.mocks.emulated")
    assert not allowed("nvmlab.storage.query", "nvmlab.instruments")
    assert not allowed("nvmlab.clock", "nvmlab.drivers.transport")
    assert not allowed("nvmlab.tuning.x", "nvmlab.demo")
    assert not allowed("nvmlab.analysis.x", "nvmlab.tuning.writeverify")
    assert allowed("nvmlab.analysis.x", "nvmlab.tuning.mapping")
    assert allowed("nvmlab.instruments.station", "nvmlab.drivers.transport")
    assert allowed("nvmlab.tuning.x", "nvmlab.characterization.y")
    assert allowed("nvmlab.demo", "nvmlab.mocks.emulated")
    assert allowed("nvmlab.mocks.world", "nvmlab.clock")


def test_no_import_cycle_between_transport_and_recording() -> None:
    mods = modules()
    deps = {
        name: {t for _, t in imports_of(name, path)}
        for name, path in mods.items()
        if name in ("nvmlab.drivers.transport", "nvmlab.drivers.recording")
    }
    assert not (
        "nvmlab.drivers.recording" in deps["nvmlab.drivers.transport"]
        and "nvmlab.drivers.transport" in deps["nvmlab.drivers.recording"]
    ), deps
