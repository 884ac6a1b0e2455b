"""A technician's station file: what loads, and how every mistake is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvmlab.errors import ConfigError
from nvmlab.instruments.safety import SafetyLimits
from nvmlab.instruments.station import (
    StationConfig,
    StationFileError,
    check_resource,
    load_station_file,
)

GOOD_STATION = """
[station]
name = "probe-station-2"
database = "sqlite:///lab.sqlite"

[limits]
max_read_v = 0.3
max_write_v = 2.0
max_current_a = 5e-4
min_temperature_c = 0
max_temperature_c = 100

[instruments.smu]
driver = "keithley2636b"
resource = "TCPIP::192.168.1.20::5025::SOCKET"
backend = "@py"
timeout_s = 2.5

[instruments.chamber]
driver = "watlow_f4"
resource = "socket://192.168.1.40:7001"
safe_setpoint_c = 25.0
[instruments.chamber.options]
address = 1
baudrate = 9600

[instruments.board]
driver = "probe_board"
resource = "/dev/ttyUSB0"
"""


def write(tmp_path: Path, text: str, name: str = "station.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> StationFileError:
    with pytest.raises(StationFileError) as info:
        load_station_file(write(tmp_path, text))
    return info.value


def test_a_complete_station_file_loads_with_its_limits(tmp_path: Path) -> None:
    config = load_station_file(write(tmp_path, GOOD_STATION))
    assert config.name == "probe-station-2"
    assert config.database == "sqlite:///lab.sqlite"
    assert config.limits == SafetyLimits(
        max_read_v=0.3,
        max_write_v=2.0,
        max_current_a=5e-4,
        min_temperature_c=0,
        max_temperature_c=100,
    )
    smu, chamber, board = (config.instruments[r] for r in ("smu", "chamber", "board"))
    assert (smu.driver, smu.resource, smu.timeout_s) == (
        "keithley2636b",
        "TCPIP::192.168.1.20::5025::SOCKET",
        2.5,
    )
    assert chamber.safe_setpoint_c == 25.0 and chamber.options == {"address": 1, "baudrate": 9600}
    assert board.resource == "/dev/ttyUSB0" and board.timeout_s == 5.0 and board.backend == "@py"


def test_omitted_sections_take_the_defaults(tmp_path: Path) -> None:
    config = load_station_file(
        write(
            tmp_path, '[instruments.chamber]\ndriver = "espec"\nresource = "COM3"\n', "bench7.toml"
        )
    )
    assert config.name == "bench7"
    assert config.limits == SafetyLimits()
    assert config.instruments["chamber"].safe_setpoint_c is None


def test_a_toml_syntax_error_gives_file_line_and_column(tmp_path: Path) -> None:
    error = problems_of(
        tmp_path, '[station]\nname = "x"\n[instruments.smu\ndriver = "keithley2400"\n'
    )
    message = str(error)
    assert "station.toml" in message
    assert "line 3" in message and "column" in message
    assert isinstance(error, ConfigError)


def test_an_unknown_driver_lists_the_allowed_ones(tmp_path: Path) -> None:
    error = problems_of(
        tmp_path, '[instruments.smu]\ndriver = "keithley2450"\nresource = "GPIB0::24::INSTR"\n'
    )
    assert error.problems[0][0] == "instruments.smu.driver"
    message = str(error)
    assert "'keithley2450'" in message
    for allowed in (
        "keithley2400",
        "keithley2636b",
        "keysight_b2902a",
        "espec",
        "watlow_f4",
        "probe_board",
    ):
        assert allowed in message


def test_a_chamber_driver_in_the_smu_section_is_a_role_mismatch(tmp_path: Path) -> None:
    error = problems_of(tmp_path, '[instruments.smu]\ndriver = "espec"\nresource = "COM3"\n')
    assert "'espec' drives a chamber, not a smu" in str(error)
    assert "keithley2400" in str(error)


@pytest.mark.parametrize(
    "resource",
    [
        "GPIB24",
        "tcpip 192.168.1.20",
        "sockett://127.0.0.1:7000",
        "socket://127.0.0.1",
        "socket://host:99999",
        "",
    ],
)
def test_bad_resource_strings_are_rejected_with_examples(tmp_path: Path, resource: str) -> None:
    error = problems_of(
        tmp_path, f'[instruments.board]\ndriver = "probe_board"\nresource = "{resource}"\n'
    )
    where, message = error.problems[0]
    assert where == "instruments.board.resource"
    if resource:
        assert repr(resource) in message and "VISA resource" in message and "socket://" in message


@pytest.mark.parametrize(
    "resource",
    [
        "TCPIP::127.0.0.1::5025::SOCKET",
        "TCPIP0::nvmlab-abc-smu::5025::SOCKET",
        "GPIB0::24::INSTR",
        "USB0::0x05E6::0x2636::4480001::INSTR",
        "ASRL/dev/ttyUSB0::INSTR",
        "ASRLsocket://127.0.0.1:7000::INSTR",
        "ASRLnvmlab://abc/chamber::INSTR",
        "socket://127.0.0.1:7000",
        "rfc2217://10.0.0.5:4001",
        "loop://",
        "nvmlab://abc/board",
        "/dev/ttyUSB0",
        "COM3",
    ],
)
def test_real_world_resource_strings_are_accepted(resource: str) -> None:
    assert check_resource(resource) is None


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("max_write_v", "-1.0", "(0, 20] V"),
        ("max_write_v", "25.0", "(0, 20] V"),
        ("max_read_v", "0", "(0, 20] V"),
        ("max_current_a", "2.0", "(0, 1] A"),
        ("max_pulse_width_s", "-0.1", "(0, 10] s"),
        ("max_temperature_c", "1000", "[-100, 300] C"),
    ],
)
def test_negative_zero_or_absurd_limits_are_refused(
    tmp_path: Path, key: str, value: str, allowed: str
) -> None:
    error = problems_of(
        tmp_path,
        f'[limits]\n{key} = {value}\n[instruments.chamber]\ndriver = "espec"\nresource = "COM3"\n',
    )
    assert error.problems[0][0] == f"limits.{key}"
    assert allowed in error.problems[0][1]


def test_a_temperature_range_upside_down_is_refused(tmp_path: Path) -> None:
    error = problems_of(
        tmp_path,
        "[limits]\nmin_temperature_c = 80\nmax_temperature_c = 20\n"
        '[instruments.chamber]\ndriver = "espec"\nresource = "COM3"\n',
    )
    assert "must be below limits.max_temperature_c" in str(error)


def test_wrong_types_name_the_type_expected_and_found(tmp_path: Path) -> None:
    error = problems_of(
        tmp_path,
        '[limits]\nmax_write_v = "2.5"\n[instruments.smu]\ndriver = 2400\n'
        'resource = "GPIB0::24::INSTR"\ntimeout_s = true\n',
    )
    found = dict(error.problems)
    assert "must be a number (V), got '2.5' (str)" in found["limits.max_write_v"]
    assert "must be a string, got 2400 (int)" in found["instruments.smu.driver"]
    assert "must be a number (s), got True (bool)" in found["instruments.smu.timeout_s"]


def test_unknown_sections_keys_and_options_are_reported(tmp_path: Path) -> None:
    error = problems_of(
        tmp_path,
        '[stations]\nname = "typo"\n[limits]\nmax_voltage = 3\n'
        '[instruments.smu]\ndriver = "keithley2400"\nresource = "GPIB0::24::INSTR"\nsafe_setpoint_c = 20\n'
        "[instruments.smu.options]\nadress = 2\n"
        '[instruments.oscilloscope]\ndriver = "x"\nresource = "y"\n',
    )
    found = dict(error.problems)
    assert "unknown section 'stations'" in found["stations"]
    assert "unknown key 'max_voltage'" in found["limits.max_voltage"]
    assert "max_write_v" in found["limits.max_voltage"]
    assert "unknown key 'safe_setpoint_c'" in found["instruments.smu.safe_setpoint_c"]
    assert (
        "unknown option 'adress' for driver 'keithley2400'"
        in found["instruments.smu.options.adress"]
    )
    assert "unknown role 'oscilloscope'" in found["instruments.oscilloscope"]


def test_every_problem_is_reported_at_once_with_the_file_name(tmp_path: Path) -> None:
    error = problems_of(
        tmp_path,
        '[limits]\nmax_current_a = 10\n[instruments.smu]\ndriver = "keithley9999"\nresource = "nowhere"\n'
        '[instruments.chamber]\ndriver = "espec"\nresource = "COM1"\nsafe_setpoint_c = 500\n',
    )
    assert len(error.problems) == 4
    message = str(error)
    assert message.startswith(f"{tmp_path / 'station.toml'}: 4 problems in the station file:")
    assert "  - instruments.chamber.safe_setpoint_c: 500 C" in message


def test_required_fields_and_an_empty_station_are_reported(tmp_path: Path) -> None:
    error = problems_of(tmp_path, '[instruments.smu]\nbackend = "@py"\n')
    assert dict(error.problems) == {
        "instruments.smu.driver": "is required (a string)",
        "instruments.smu.resource": "is required (a string)",
    }
    empty = problems_of(tmp_path, '[station]\nname = "empty"\n')
    assert "no instruments defined" in str(empty)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml: file: cannot be read"):
        load_station_file(tmp_path / "nope.toml")


def test_a_dict_can_be_validated_without_a_file() -> None:
    config = StationConfig.from_dict(
        {"instruments": {"board": {"driver": "probe_board", "resource": "nvmlab://b1/board"}}}
    )
    assert config.instruments["board"].model == "probe board"
    with pytest.raises(
        StationFileError, match="<dict>: instruments.board.timeout_s: 0 s is outside"
    ):
        StationConfig.from_dict(
            {
                "instruments": {
                    "board": {"driver": "probe_board", "resource": "COM4", "timeout_s": 0}
                }
            }
        )


@pytest.mark.parametrize(
    "example",
    sorted((Path(__file__).parents[2] / "examples").glob("station-*.toml")),
    ids=lambda p: p.name,
)
def test_the_example_station_files_are_valid(example: Path) -> None:
    config = load_station_file(example)
    assert set(config.instruments) == {"smu", "chamber", "board"}
