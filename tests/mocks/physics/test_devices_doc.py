"""docs/devices.md stays true to the code: every device parameter with its exact default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from nvmlab.mocks.physics.eflash import EflashParams
from nvmlab.mocks.physics.memristor import MemristorParams

DOC = Path(__file__).resolve().parents[3] / "docs" / "devices.md"
_ROW = re.compile(r"^\| `(?P<name>[a-z0-9_]+)` \| (?P<default>[^|]+) \|(?P<rest>.*)\|$")


def documented(section: str) -> dict[str, tuple[str, str]]:
    """Parameter rows (name -> (default, source)) of the table under heading ``section``."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    rows = {}
    for line in text[start : end if end > 0 else None].splitlines():
        match = _ROW.match(line.strip())
        if match:
            cells = [c.strip() for c in match["rest"].split("|")]
            rows[match["name"]] = (match["default"].strip(), cells[-1])
    return rows


@pytest.mark.parametrize(
    ("cls", "section"),
    [(MemristorParams, "Memristor crossbar"), (EflashParams, "Embedded NOR flash")],
)
def test_every_parameter_is_documented_with_its_default_and_a_source(
    cls: type, section: str
) -> None:
    rows = documented(section)
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    assert set(rows) == set(fields)
    for name, default in fields.items():
        text, source = rows[name]
        if isinstance(default, bool):
            assert text == str(default).lower(), name
        else:
            assert float(text) == pytest.approx(default, rel=1e-12), name
        assert source, f"{name} has no source"
