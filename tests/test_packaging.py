"""The packaging keeps every top-level folder inside the single ``nvmlab`` namespace."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
PACKAGES: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]


def _packages_on_disk() -> set[str]:
    found = set()
    for import_name, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            parts = [p for p in rel.parts if p]
            found.add(".".join([import_name, *parts]))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    on_disk = _packages_on_disk()
    assert on_disk == set(PACKAGES), (
        f"missing from pyproject: {sorted(on_disk - set(PACKAGES))}; "
        f"listed but absent: {sorted(set(PACKAGES) - on_disk)}"
    )


def test_every_module_imports_under_the_namespace() -> None:
    failures = []
    for import_name, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for py in base.rglob("*.py"):
            rel = py.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if "versions" in parts or py.name == "env.py":
                continue  # alembic revision scripts and env run only under alembic
            name = ".".join([import_name, *parts])
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - report every failure at once
                failures.append(f"{name}: {exc!r}")
    assert not failures, "\n".join(failures)


def test_no_generic_top_level_module_is_importable() -> None:
    for generic in ("drivers", "instruments", "mocks", "storage"):
        spec = importlib.util.find_spec(generic)
        assert spec is None or "site-packages" not in str(spec.origin or ""), generic


def test_test_module_names_are_unique() -> None:
    """pytest's default import mode needs distinct basenames across test folders."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in (ROOT / "tests").rglob("*.py"):
        if path.name == "conftest.py":
            continue
        if path.name in seen:
            clashes.append(f"{seen[path.name]} and {path}")
        seen[path.name] = path
    assert not clashes, "rename one of: " + "; ".join(clashes)
