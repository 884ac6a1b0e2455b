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


#: Imports that must work wherever a script or a prompt is started.
_PROBE = (
    "import nvmlab, nvmlab.instruments, nvmlab.mocks.physics, nvmlab.storage, nvmlab.models; "
    "print(nvmlab.__file__)"
)


def _import_from(cwd: Path, env: dict[str, str] | None = None) -> str:
    import os
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"from {cwd}: {result.stderr.strip().splitlines()[-1:]}"
    return result.stdout.strip()


def test_import_works_from_the_checkout_root_and_elsewhere_editable(tmp_path: Path) -> None:
    """The strict editable install (the Makefile's): same package from any folder."""
    from_root = _import_from(ROOT)
    from_elsewhere = _import_from(tmp_path)
    assert from_root == from_elsewhere


def test_import_works_from_the_checkout_root_and_elsewhere_plain_install(tmp_path: Path) -> None:
    """A plain (non-editable) ``pip install .``: the checkout's folders never hide it."""
    import subprocess

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {"PYTHONPATH": str(target)}
    expected = str(target / "nvmlab" / "__init__.py")
    assert _import_from(ROOT, env) == expected
    assert _import_from(tmp_path, env) == expected


def test_make_demo_installs_the_runtime_dependencies_only() -> None:
    import shutil
    import subprocess

    make = shutil.which("make")
    assert make is not None, "make is needed to run the README's commands"
    dry = subprocess.run(
        [make, "-n", "-B", "demo"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    installs = [line for line in dry.splitlines() if "pip install" in line and " -e " in line]
    assert installs, dry
    assert all("[test]" not in line for line in installs), installs
