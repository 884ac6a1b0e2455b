"""``nvmlab characterize`` and ``nvmlab profile`` from the command line.

Bad input must be refused before any instrument is touched. The station file used for
those tests names instruments on loopback ports where nothing listens: had the command
opened the station, it would have failed with a connection error instead of the
validation error the test expects.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from toysweep import registered_toy_sweep

from nvmlab.cli import main
from nvmlab.storage import open_database
from nvmlab.storage.inventory import register_chip
from nvmlab.storage.profile import ChipProfile, save_profile
from nvmlab.storage.runs import runs_liveness


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dead_station(tmp_path: Path) -> Path:
    """A station file whose instruments are on ports where nothing listens."""
    smu, chamber, board = _dead_port(), _dead_port(), _dead_port()
    path = tmp_path / "station.toml"
    path.write_text(
        f"""[station]
name = "nowhere"

[instruments.smu]
driver = "keithley2400"
resource = "TCPIP::127.0.0.1::{smu}::SOCKET"
backend = "@py"
timeout_s = 1

[instruments.chamber]
driver = "espec"
resource = "ASRLsocket://127.0.0.1:{chamber}::INSTR"
backend = "@py"
timeout_s = 1

[instruments.board]
driver = "probe_board"
resource = "ASRLsocket://127.0.0.1:{board}::INSTR"
backend = "@py"
timeout_s = 1
"""
    )
    return path


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'results.sqlite'}"
    with open_database(url) as db:
        register_chip(db, "chip16", array_kind="memristor", n_rows=16, n_cols=16)
    return url


def _runs(url: str) -> int:
    from sqlalchemy import func, select

    from nvmlab.storage.models import Run

    with open_database(url) as db, db.read_connection() as conn:
        return int(conn.execute(select(func.count()).select_from(Run)).scalar_one())


def _characterize(kind: str, station: Path, url: str, *extra: str) -> list[str]:
    return ["characterize", kind, "--station", str(station), "--db", url, "--no-progress", *extra]


def test_an_unregistered_chip_is_refused_before_the_station_opens(
    dead_station: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with registered_toy_sweep():
        code = main(_characterize("test-read-rows", dead_station, db_url, "--chip", "chip99"))
    err = capsys.readouterr().err
    assert code == 1
    assert "chip99" in err and "nvmlab chip add" in err
    assert "connect" not in err.lower() and "timeout" not in err.lower()
    assert _runs(db_url) == 0


def test_a_sample_larger_than_the_array_names_the_option_value_and_range(
    dead_station: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with registered_toy_sweep():
        code = main(
            _characterize(
                "test-read-rows", dead_station, db_url, "--chip", "chip16", "--sample", "300"
            )
        )
    err = capsys.readouterr().err
    assert code == 1
    assert "--sample" in err and "300" in err and "0 (every device) to 256" in err, err
    assert _runs(db_url) == 0


def test_an_unknown_kind_lists_the_kinds(
    dead_station: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with registered_toy_sweep(), pytest.raises(SystemExit) as info:
        main(_characterize("no-such-kind", dead_station, db_url, "--chip", "chip16"))
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "no-such-kind" in err and "test-read-rows" in err
    assert _runs(db_url) == 0


def test_a_resume_of_another_kind_is_refused(
    dead_station: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nvmlab.storage.runs import start_run

    with open_database(db_url) as db:
        other = start_run(db, "conductance-map")
    with registered_toy_sweep():
        code = main(
            _characterize(
                "test-read-rows", dead_station, db_url, "--chip", "chip16", "--resume", str(other)
            )
        )
    err = capsys.readouterr().err
    assert code == 1
    assert "--resume" in err and "conductance-map" in err
    with open_database(db_url) as db:
        assert list(runs_liveness(db)) == [other]  # nothing new started


def test_profile_json_has_the_documented_keys_and_nulls_where_not_measured(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thresholds = np.full((16, 16), np.nan)
    thresholds[2, 3] = 1.25
    defect = np.full((16, 16), -1)
    defect[0, :] = 0
    defect[0, 5] = 2
    with open_database(db_url) as db:
        save_profile(
            db,
            ChipProfile(
                "chip16", "memristor", 16, 16, set_threshold_v=thresholds, defect_class=defect,
                safe_read_v=0.3, meta={"runs": {"thresholds": 4}},
            ),
        )  # fmt: skip
    out = tmp_path / "chip16.json"
    assert main(["profile", "--chip", "chip16", "--db", db_url, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in (
        "defect", "set_threshold_v", "reset_threshold_v", "temp_coeff_s_per_k",
        "read_noise_rel", "forming_voltage_v", "iv_nonlinearity", "summary", "run_ids",
    ):  # fmt: skip
        assert key in data, key
    assert len(data["defect"]) == 16 and len(data["defect"][0]) == 16
    assert data["defect"][0][5] == 2 and data["defect"][1][0] == -1
    assert data["set_threshold_v"][2][3] == 1.25 and data["set_threshold_v"][0][0] is None
    assert data["reset_threshold_v"][0][0] is None
    assert data["summary"]["set_threshold_v"]["count"] == 1
    assert data["summary"]["defect"] == {
        "measured": 16,
        "functional": 15,
        "stuck_off": 0,
        "stuck_on": 1,
    }
    assert data["scalars"]["safe_read_v"] == 0.3
    assert data["run_ids"] == {"thresholds": 4}


def test_profile_of_a_chip_without_one_says_what_to_do(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profile", "--chip", "chip16", "--db", db_url]) == 1
    assert "characterize it first" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "allowed"),
    [("25,200", "-10 to 125 C"), ("25,-30", "-10 to 125 C")],
)
def test_a_temperature_outside_the_station_or_chamber_range_is_refused_first(
    dead_station: Path, db_url: str, capsys: pytest.CaptureFixture[str], value: str, allowed: str
) -> None:
    code = main(
        _characterize(
            "temperature", dead_station, db_url, "--chip", "chip16", "--temperatures-c", value
        )
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert "--temperatures-c" in err and value.split(",")[1] in err and allowed in err, err
    assert "connect" not in err.lower() and "timeout" not in err.lower()
    assert _runs(db_url) == 0
