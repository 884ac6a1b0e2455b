"""The reference documents docs/station-file.md and docs/bench-file.md stay true to the code.

Every ``toml`` code block must be a file the validators accept, and every parameter the
code knows must be documented with its exact default (and range, where the code has one):
a new parameter, or a changed default, fails here until the document follows.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from nvmlab.instruments.safety import ARRAY_KINDS, SafetyLimits, default_limits
from nvmlab.instruments.station import (
    DRIVERS,
    LIMIT_BOUNDS,
    STATION_KEYS,
    TRANSPORT_OPTIONS,
    StationConfig,
    StationFileError,
    load_station_file,
)
from nvmlab.mocks.benchfile import CHAMBER_MODELS, SMU_MODELS, BenchConfig
from nvmlab.mocks.emulated import build_emulated_bench
from nvmlab.mocks.physics.eflash import EflashParams
from nvmlab.mocks.physics.memristor import MemristorParams
from nvmlab.mocks.thermal import ThermalParams

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DOCS = Path(__file__).resolve().parent.parent / "docs"
STATION_DOC = DOCS / "station-file.md"
BENCH_DOC = DOCS / "bench-file.md"

_FENCE = re.compile(r"^```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def toml_blocks(doc: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every fenced code block tagged ``toml`` in ``doc``."""
    text = doc.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m["body"])
        for m in _FENCE.finditer(text)
        if m["lang"].strip() == "toml"
    ]


def section_rows(doc: Path, heading: str) -> dict[str, list[str]]:
    """Markdown table rows under ``heading`` (up to the next heading of the same or a
    higher level) whose first cell is a backticked name: name -> the other cells."""
    text = doc.read_text(encoding="utf-8")
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    end_match = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, start + len(heading))
    part = text[start : end_match.start() if end_match else len(text)]
    rows: dict[str, list[str]] = {}
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
            rows.setdefault(cells[0].strip("`"), cells[1:])
    return rows


STATION_BLOCKS = toml_blocks(STATION_DOC)
BENCH_BLOCKS = toml_blocks(BENCH_DOC)


# ---------------------------------------------------------------------------------------
# Every TOML example is a file the validators accept
# ---------------------------------------------------------------------------------------
def test_both_documents_carry_complete_examples() -> None:
    # The station document promises a real lab and an emulated bench; the bench document
    # a memristor, an eFlash and a resistor bench, and fault examples.
    assert len(STATION_BLOCKS) >= 2
    assert len(BENCH_BLOCKS) >= 6


@pytest.mark.parametrize("line, block", STATION_BLOCKS, ids=[f"line{n}" for n, _ in STATION_BLOCKS])
def test_station_example_validates(line: int, block: str, tmp_path: Path) -> None:
    data = tomllib.loads(block)
    config = StationConfig.from_dict(data, source=f"station-file.md:{line}")
    path = tmp_path / "station.toml"
    path.write_text(block, encoding="utf-8")
    assert load_station_file(path).instruments == config.instruments
    assert config.instruments, "an example station names at least one instrument"


def test_station_examples_cover_a_lab_and_the_emulated_bench() -> None:
    configs = [StationConfig.from_dict(tomllib.loads(b)) for _, b in STATION_BLOCKS]
    resources = [i.resource for c in configs for i in c.instruments.values()]
    assert any("127.0.0.1" in r for r in resources), "an emulated-bench example"
    assert any("127.0.0.1" not in r for r in resources), "a real-lab example"
    # Between them the examples use every role and carry a chamber safe setpoint.
    assert {role for c in configs for role in c.instruments} == {"smu", "chamber", "board"}
    assert any(
        c.instruments["chamber"].safe_setpoint_c is not None
        for c in configs
        if "chamber" in c.instruments
    )


@pytest.mark.parametrize("line, block", BENCH_BLOCKS, ids=[f"line{n}" for n, _ in BENCH_BLOCKS])
def test_bench_example_validates_and_builds(line: int, block: str) -> None:
    config = BenchConfig.from_dict(tomllib.loads(block), source=f"bench-file.md:{line}")
    assert config.state_file is None, "examples must not write chip state files"
    # [physics] and the fault kinds per instrument are checked when the bench is built.
    emulated = build_emulated_bench(config)
    try:
        assert emulated.bench.array.rows == config.rows
        assert set(emulated.faults) == set(config.faults)
    finally:
        emulated.close()


# ---------------------------------------------------------------------------------------
# Every parameter the code knows is documented, with its exact default and range
# ---------------------------------------------------------------------------------------
def _g(value: float) -> str:
    return f"{value:g}"


def same_number(cell: str, value: Any) -> bool:
    """Whether a table cell states ``value`` (``3``, ``3.0`` and ``3e0`` all state 3)."""
    try:
        return float(cell) == value
    except ValueError:
        return False


@pytest.mark.parametrize(
    "params_class, heading",
    [
        (MemristorParams, '### `array = "memristor"`: `MemristorParams`'),
        (EflashParams, '### `array = "eflash"`: `EflashParams`'),
    ],
    ids=["MemristorParams", "EflashParams"],
)
def test_every_device_parameter_is_documented_exactly(params_class: Any, heading: str) -> None:
    rows = section_rows(BENCH_DOC, heading)
    for f in dataclasses.fields(params_class):
        assert f.name in rows, f"{params_class.__name__}.{f.name} is not documented under {heading}"
        unit, default, allowed, meaning = rows[f.name][:4]
        assert meaning, f"{f.name}: no meaning given"
        if isinstance(f.default, bool):
            assert default == str(f.default).lower(), f"{f.name}: default {default!r}"
            continue
        lo, hi = f.metadata["range"]
        assert same_number(default, f.default), f"{f.name}: documented {default}, code {f.default}"
        assert allowed == f"{_g(lo)} to {_g(hi)}", f"{f.name}: documented range {allowed}"
        assert unit, f"{f.name}: no unit"
    documented_extra = set(rows) - {f.name for f in dataclasses.fields(params_class)}
    assert not documented_extra, f"documented but not in the code: {sorted(documented_extra)}"


def test_every_thermal_parameter_is_documented_with_its_default() -> None:
    rows = section_rows(BENCH_DOC, "## `[thermal]`")
    names = [f.name for f in dataclasses.fields(ThermalParams)]
    assert sorted(rows) == sorted(names)
    for f in dataclasses.fields(ThermalParams):
        assert same_number(rows[f.name][1], f.default), f"{f.name}: default {rows[f.name][1]}"


def test_every_safety_limit_is_documented_with_default_and_sane_range() -> None:
    rows = section_rows(STATION_DOC, "## `[limits]`")
    names = [f.name for f in dataclasses.fields(SafetyLimits)]
    assert sorted(rows) == sorted(names)
    eflash = default_limits("eflash")
    for f in dataclasses.fields(SafetyLimits):
        unit, default, eflash_default, sane = rows[f.name][:4]
        low, high, bound_unit, low_inclusive = LIMIT_BOUNDS[f.name]
        assert unit == bound_unit
        assert same_number(default, f.default), f"{f.name}: documented default {default}"
        assert same_number(default, getattr(default_limits("memristor"), f.name))
        assert same_number(eflash_default, getattr(eflash, f.name)), (
            f"{f.name}: documented eFlash default {eflash_default}"
        )
        assert sane == f"{'[' if low_inclusive else '('}{_g(low)}, {_g(high)}]", f"{f.name}: {sane}"


def test_every_station_key_and_array_kind_is_documented() -> None:
    rows = section_rows(STATION_DOC, "## `[station]`")
    assert sorted(rows) == sorted(STATION_KEYS)
    allowed = rows["array"][2]
    assert sorted(re.findall(r"`([a-z]+)`", allowed)) == sorted(ARRAY_KINDS)


def test_every_driver_option_and_model_name_is_documented() -> None:
    station_text = STATION_DOC.read_text(encoding="utf-8")
    for name, spec in DRIVERS.items():
        assert f"| `{name}` | {spec.role} |" in station_text, f"driver {name} not in the table"
        for option in spec.driver_options:
            assert f"| `{name}` | `{option}` |" in station_text, f"{name} option {option}"
    options = section_rows(STATION_DOC, "### `options`")
    assert set(TRANSPORT_OPTIONS) <= set(options)
    bench_text = BENCH_DOC.read_text(encoding="utf-8")
    for model in (*SMU_MODELS, *CHAMBER_MODELS):
        assert f"`{model}`" in bench_text, f"model {model} not in bench-file.md"


def test_the_error_example_is_what_the_validator_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "real run" in the Errors section: its file, checked now, gives its output.
    text = STATION_DOC.read_text(encoding="utf-8")
    blocks = [m["body"] for m in _FENCE.finditer(text) if not m["lang"].strip()]
    bad_file = next(b for b in blocks if b.startswith("[station]"))
    shown = next(b for b in blocks if b.startswith("$ nvmlab station check bad-station.toml"))
    expected = shown.splitlines()[1:]
    expected = expected[: expected.index("$ echo $?")]
    (tmp_path / "bad-station.toml").write_text(bad_file, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StationFileError) as raised:
        load_station_file("bad-station.toml")
    assert ("nvmlab: error: " + str(raised.value)).splitlines() == expected
