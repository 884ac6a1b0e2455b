"""Bench files: the examples load, every setting reaches the bench, and every mistake is
reported with the file, the field, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvmlab.errors import ConfigError
from nvmlab.mocks.benchfile import BenchConfig, load_bench_file
from nvmlab.mocks.emulated import build_emulated_bench

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize("name", ["bench-memristor.toml", "bench-eflash.toml", "bench-faults.toml"])
def test_example_bench_files_build_a_bench(name: str) -> None:
    config = load_bench_file(EXAMPLES / name)
    emulated = build_emulated_bench(config, rows=8, cols=8)
    assert emulated.bench.array.rows == 8
    assert emulated.config.smu.model == config.smu.model
    emulated.close()


def test_every_section_reaches_the_bench(tmp_path: Path) -> None:
    path = tmp_path / "bench.toml"
    path.write_text(
        """
[bench]
seed = 9
array = "eflash"
rows = 4
cols = 6
time_scale = 30
state_file = "state/chip.npz"
[physics]
read_bit_line_v = 0.8
[thermal]
air_time_constant_s = 30.0
ramp_rate_c_per_s = 0.1
[smu]
model = "keithley2636b"
query_latency_s = 0.002
line_frequency_hz = 50
[chamber]
model = "watlow_f4"
address = 3
[board]
query_latency_s = 0.001
[faults.smu]
kind = "drop"
messages = [2, 4]
"""
    )
    config = load_bench_file(path)
    assert (config.seed, config.array, config.rows, config.cols) == (9, "eflash", 4, 6)
    assert config.time_scale == 30.0
    assert config.state_file == tmp_path / "state" / "chip.npz"
    assert config.thermal_params().air_time_constant_s == 30.0
    assert config.smu.line_frequency_hz == 50.0
    assert config.faults["smu"][0].messages == (2, 4)
    (tmp_path / "state").mkdir()  # closing the bench saves the chip there
    emulated = build_emulated_bench(config)
    assert emulated.bench.array.kind == "eflash"
    assert emulated.firmware["chamber"].address == 3  # type: ignore[attr-defined]
    assert emulated.firmware["smu"].query_latency_s == 0.002
    assert emulated.firmware["board"].query_latency_s == 0.001
    assert emulated.bench.thermal.params.ramp_rate_c_per_s == 0.1
    assert "smu" in emulated.faults
    emulated.close()


def test_command_line_values_override_the_file() -> None:
    config = load_bench_file(EXAMPLES / "bench-eflash.toml")
    new = config.with_overrides(seed=4, rows=8, smu_model="keithley2400", time_scale=None)
    assert (new.seed, new.rows, new.cols, new.smu.model) == (4, 8, 16, "keithley2400")
    assert new.time_scale == config.time_scale  # None = not given on the command line
    assert new.chamber.model == "watlow_f4"


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (
            "[bnch]\nseed = 1",
            "bnch",
            ["unknown section [bnch]", "allowed sections: bench, physics"],
        ),
        ("[bench]\nsead = 1", "bench.sead", ["unknown setting 'sead'", "allowed in [bench]: seed"]),
        ("[bench]\nrows = '16'", "bench.rows", ["value '16'", "expected an integer"]),
        (
            "[bench]\nrows = 0",
            "bench.rows",
            ["value 0 is out of range", "allowed from 1 up to 4096"],
        ),
        ("[bench]\ntime_scale = 0", "bench.time_scale", ["value 0.0 is out of range", "above 0.0"]),
        ("[bench]\narray = 'pcm'", "bench.array", ["value 'pcm'", "allowed: memristor, eflash"]),
        ("[smu]\nmodel = 'k2401'", "smu.model", ["value 'k2401'", "keysight_b2902a"]),
        (
            "[smu]\nline_frequency_hz = 55",
            "smu.line_frequency_hz",
            ["value 55.0", "allowed: 50.0, 60.0"],
        ),
        ("[chamber]\naddress = 300", "chamber.address", ["value 300 is out of range", "up to 247"]),
        (
            "[thermal]\nair_time_constant_s = -1",
            "thermal.air_time_constant_s",
            ["value -1.0", "above 0.0"],
        ),
        ("[thermal]\nfan = 1", "thermal.fan", ["unknown setting 'fan'", "ramp_rate_c_per_s"]),
        (
            "[faults.oven]\nkind = 'drop'",
            "faults.oven",
            ["unknown role 'oven'", "smu, chamber, board"],
        ),
        (
            "[faults.smu]\nkind = 'alarm'\nat_s = 1.0",
            "faults.smu",
            ["'alarm' is not allowed for role 'smu'"],
        ),
        (
            "[faults.smu]\nkind = 'drop'\nevery = 0",
            "faults.smu",
            ["every=0 must be an integer >= 1"],
        ),
    ],
)
def test_mistakes_name_file_field_value_and_what_is_allowed(
    tmp_path: Path, text: str, field: str, words: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        load_bench_file(path)
    assert err.value.file == str(path)
    assert err.value.field == field
    for word in words:
        assert word in str(err.value)


def test_not_toml_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[bench\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_bench_file(path)
    with pytest.raises(ConfigError, match="cannot read the bench file"):
        load_bench_file(tmp_path / "missing.toml")


def test_physics_mistakes_name_the_bench_file(tmp_path: Path) -> None:
    path = tmp_path / "bench.toml"
    path.write_text("[bench]\nrows = 4\ncols = 4\n[physics]\nthreshold_cv = 7.0\n")
    with pytest.raises(ConfigError) as err:
        build_emulated_bench(load_bench_file(path))
    assert str(path) in str(err.value) and "threshold_cv" in str(err.value)


def test_round_trip_through_a_table() -> None:
    config = load_bench_file(EXAMPLES / "bench-faults.toml")
    again = BenchConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
