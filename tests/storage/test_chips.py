"""Registering chips: ``nvmlab chip add`` / ``nvmlab chip list``, and ``require_chip``, the
check measurement commands make before recording anything on a chip."""

from __future__ import annotations

import pytest

from nvmlab.cli import main
from nvmlab.errors import StorageError
from nvmlab.storage import ensure_chip
from nvmlab.storage.inventory import RegisteredChip, list_chips, require_chip


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_chip_add_registers_once_and_the_same_again_is_a_no_op(
    db, capsys: pytest.CaptureFixture[str]
) -> None:
    url = db.url.render_as_string(hide_password=False)
    add = ["chip", "add", "W07-D12", "--kind", "memristor", "--rows", "16", "--cols", "32"]
    assert main([*add, "--lot", "L42", "--db", url]) == 0
    assert capsys.readouterr().out.strip() == (
        "chip W07-D12 registered: memristor, 16 rows x 32 cols"
    )
    assert main([*add, "--db", url]) == 0
    assert capsys.readouterr().out.strip() == (
        "chip W07-D12 is already registered as memristor, 16 rows x 32 cols; nothing to do"
    )
    chips = list_chips(db)
    assert [(c.name, c.kind, c.rows, c.cols, c.lot) for c in chips] == [
        ("W07-D12", "memristor", 16, 32, "L42")
    ]


@pytest.mark.parametrize(
    ("kind", "rows", "cols"),
    [("memristor", "8", "32"), ("memristor", "16", "8"), ("eflash", "16", "32")],
)
def test_chip_add_with_other_dimensions_or_kind_is_a_clear_error(
    db, capsys: pytest.CaptureFixture[str], kind: str, rows: str, cols: str
) -> None:
    url = db.url.render_as_string(hide_password=False)
    ensure_chip(db, "W07-D12", array_kind="memristor", n_rows=16, n_cols=32)
    argv = ["chip", "add", "W07-D12", "--kind", kind, "--rows", rows, "--cols", cols]
    assert main([*argv, "--db", url]) == 1
    assert _one_error_line(capsys) == (
        f"nvmlab: error: chip 'W07-D12' is registered as memristor 16 x 32, not {kind} "
        f"{rows} x {cols}; use another chip name"
    )
    assert len(list_chips(db)) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "0", "--cols", "4"], "chip 'X': size 0 x 4; rows and cols must be > 0"),
        (["--rows", "4", "--cols", "-1"], "chip 'X': size 4 x -1; rows and cols must be > 0"),
    ],
)
def test_chip_add_refuses_a_size_that_is_not_positive(
    db, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    url = db.url.render_as_string(hide_password=False)
    assert main(["chip", "add", "X", "--kind", "eflash", *argv, "--db", url]) == 1
    assert _one_error_line(capsys) == f"nvmlab: error: {message}"
    assert list_chips(db) == []


def test_chip_add_refuses_an_unknown_kind(db, capsys: pytest.CaptureFixture[str]) -> None:
    url = db.url.render_as_string(hide_password=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["chip", "add", "X", "--kind", "rram", "--rows", "2", "--cols", "2", "--db", url])
    assert exit_info.value.code == 2
    assert "invalid choice: 'rram' (choose from" in capsys.readouterr().err


def test_chip_list_shows_every_chip(db, capsys: pytest.CaptureFixture[str]) -> None:
    url = db.url.render_as_string(hide_password=False)
    assert main(["chip", "list", "--db", url]) == 0
    assert capsys.readouterr().out.strip() == (
        f"no chips registered in {db.display_url}; add one with 'nvmlab chip add NAME "
        "--kind memristor|eflash --rows R --cols C'"
    )
    ensure_chip(db, "B", array_kind="eflash", n_rows=4, n_cols=8)
    ensure_chip(db, "A", array_kind="memristor", n_rows=64, n_cols=64, lot="L1", wafer="W3")
    assert main(["chip", "list", "--db", url]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["name", "kind", "rows", "cols", "lot", "wafer", "die", "registered"]
    assert lines[1].split()[:7] == ["A", "memristor", "64", "64", "L1", "W3", "-"]
    assert lines[2].split()[:7] == ["B", "eflash", "4", "8", "-", "-", "-"]


def test_require_chip_refuses_an_unregistered_chip_naming_the_command(db) -> None:
    with pytest.raises(StorageError) as info:
        require_chip(db, "W99")
    assert str(info.value) == (
        f"chip 'W99' is not registered in database {db.display_url}; register it first: "
        "nvmlab chip add W99 --kind memristor|eflash --rows R --cols C"
    )
    chip_id = ensure_chip(db, "W99", array_kind="eflash", n_rows=2, n_cols=3)
    found = require_chip(db, "W99")
    assert isinstance(found, RegisteredChip)
    assert (found.id, found.name, found.kind, found.rows, found.cols) == (
        chip_id,
        "W99",
        "eflash",
        2,
        3,
    )
    with db.read_connection() as conn:  # inside a caller's transaction too
        assert require_chip(conn, "W99") == found
