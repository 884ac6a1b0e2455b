"""Run ids given on the command line: a number out of the database's integer range is one
clear line and exit 1 on both engines (SQLite raised OverflowError with a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvmlab.cli import main

HUGE = "99999999999999999999"  # > 2**63 - 1, the largest key either engine stores


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("run", [HUGE, "-" + HUGE, "0"])
def test_export_of_a_run_id_out_of_range_is_one_line(
    db, tmp_path: Path, capsys: pytest.CaptureFixture[str], run: str
) -> None:
    url = db.url.render_as_string(hide_password=False)
    assert main(["export", run, "--out", str(tmp_path / "out"), "--db", url]) == 1
    line = one_line_error(capsys)
    assert line == (
        f"nvmlab: error: run id {run} is out of range; allowed: 1 .. 9223372036854775807 "
        "('nvmlab runs' lists them)"
    )
    assert not (tmp_path / "out").exists()


def test_export_of_a_run_id_that_is_not_a_number_is_one_line(
    db, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = db.url.render_as_string(hide_password=False)
    assert main(["export", "seven", "--out", str(tmp_path / "out"), "--db", url]) == 1
    assert "run id 'seven' is not a number" in one_line_error(capsys)


def test_the_storage_api_turns_an_out_of_range_run_id_into_a_storage_error(db) -> None:
    from nvmlab.errors import StorageError
    from nvmlab.storage import completed_units, load_reads

    for call in (lambda: load_reads(db, int(HUGE)), lambda: completed_units(db, int(HUGE))):
        with pytest.raises(StorageError, match=f"run id {HUGE} is out of range"):
            call()


@pytest.mark.parametrize("run", [HUGE, "0"])
def test_mark_aborted_of_a_run_id_out_of_range_is_one_line(
    db, capsys: pytest.CaptureFixture[str], run: str
) -> None:
    url = db.url.render_as_string(hide_password=False)
    assert main(["runs", "--mark-aborted", run, "--db", url]) == 1
    assert one_line_error(capsys).startswith(f"nvmlab: error: run id {run} is out of range")


def test_mark_aborted_of_an_unknown_run_is_one_line(db, capsys) -> None:
    url = db.url.render_as_string(hide_password=False)
    assert main(["runs", "--mark-aborted", "4242", "--db", url]) == 1
    assert "no run 4242 in database" in one_line_error(capsys)
