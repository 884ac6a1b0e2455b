"""Acceptance walkthrough of the storage commands with a wrong ``--db``: a folder, a file
that is not a database, a PostgreSQL database that does not exist. Each is one line that
says what is wrong and what is allowed, exit 1, and nothing is changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from nvmlab.cli import main

COMMANDS = [["runs"], ["db", "current"], ["db", "upgrade"], ["export", "1", "--out", "exp"]]
PG_URL = os.environ.get("NVMLAB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_folder_as_database_names_the_folder_and_a_file_to_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert main([*command, "--db", f"sqlite:///{tmp_path}"]) == 1
    line = one_line_error(capsys)
    assert f"names the folder {tmp_path}, not a database file" in line
    assert f"sqlite:///{tmp_path}/nvmlab.sqlite" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_file_that_is_not_a_database_is_left_as_it_was(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    notes = tmp_path / "notes.sqlite"
    notes.write_text("lab notes, not a database\n")
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--db", f"sqlite:///{notes}"]) == 1
    line = one_line_error(capsys)
    assert f"sqlite:///{notes} is not an SQLite database" in line
    assert notes.read_text() == "lab notes, not a database\n"
    assert not (tmp_path / "exp").exists()


def test_a_missing_postgresql_database_is_named_not_called_unreachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = make_url(PG_URL).set(database="nvmlab_walkthrough_no_such_db")
    assert main(["runs", "--db", url.render_as_string(hide_password=False)]) == 1
    line = one_line_error(capsys)
    assert 'database "nvmlab_walkthrough_no_such_db" does not exist' in line
    assert "create it first" in line and "unreachable" not in line
