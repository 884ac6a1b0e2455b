"""The precedence rule through the storage commands: ``--db`` > ``NVMLAB_DB`` > station
file (``--station FILE``, its ``[station] database``) > ``./nvmlab.sqlite``. Each level is
checked by where the chip a command registers actually lands, and by the line on stderr
that names the database and its source (password masked) whenever it is not ``--db``.
(The job-file level sits between ``NVMLAB_DB`` and the station file; storage commands
have no job file, :mod:`tests.storage.test_database_precedence` tests it in the rule.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from nvmlab.cli import main
from nvmlab.instruments.stationfile import StationConfig, load_station_file
from nvmlab.instruments.stationfile import resolve_sqlite_path as instruments_resolve
from nvmlab.storage import list_chips, open_database
from nvmlab.storage.station_database import resolve_sqlite_path, station_file_database

SECRET = "s3cr3t-pw"

#: Every storage command, with the arguments it needs besides the database options.
COMMANDS = {
    "runs": ["runs"],
    "export": ["export", "1", "--out", "OUT"],
    "chip add": ["chip", "add", "C1", "--kind", "memristor", "--rows", "2", "--cols", "2"],
    "chip list": ["chip", "list"],
    "db upgrade": ["db", "upgrade"],
    "db current": ["db", "current"],
}


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A working folder (empty, the current one) and a station folder elsewhere whose
    station file names ``lab.sqlite`` relative to itself; NVMLAB_DB unset."""
    work = tmp_path / "work"
    station = tmp_path / "bench"
    work.mkdir()
    station.mkdir()
    (station / "station.toml").write_text(
        '[station]\nname = "bench"\ndatabase = "sqlite:///lab.sqlite"\n\n'
        '[instruments.smu]\ndriver = "keithley2400"\nresource = "ASRL/dev/ttyUSB0::INSTR"\n'
    )
    monkeypatch.chdir(work)
    monkeypatch.delenv("NVMLAB_DB", raising=False)
    return {"work": work, "station": station, "file": station / "station.toml"}


def _add_chip(argv_tail: list[str], name: str) -> int:
    return main(
        ["chip", "add", name, "--kind", "memristor", "--rows", "2", "--cols", "2", *argv_tail]
    )


def _chips(path: Path) -> list[str]:
    with open_database(f"sqlite:///{path}", create=False) as db:
        return [c.name for c in list_chips(db)]


def _stderr(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_default_is_nvmlab_sqlite_in_the_current_folder(places, capsys) -> None:
    assert _add_chip([], "C-default") == 0
    assert _stderr(capsys) == [
        "database: sqlite:///./nvmlab.sqlite (default: no --db, $NVMLAB_DB or station file "
        "database given)"
    ]
    assert _chips(places["work"] / "nvmlab.sqlite") == ["C-default"]


def test_the_station_file_beats_the_default_and_its_relative_path_is_its_own_folder(
    places, capsys
) -> None:
    assert _add_chip(["--station", str(places["file"])], "C-station") == 0
    expected = f"sqlite:///{places['station'] / 'lab.sqlite'}"
    assert _stderr(capsys) == [f"database: {expected} (from station file {places['file']})"]
    assert _chips(places["station"] / "lab.sqlite") == ["C-station"]
    assert not (places["work"] / "nvmlab.sqlite").exists()
    assert not (places["work"] / "lab.sqlite").exists()
    # a relative --station path works the same from the station's own folder's parent
    assert main(["chip", "list", "--station", "../bench/station.toml"]) == 0
    captured = capsys.readouterr()
    assert "C-station" in captured.out
    assert captured.err == f"database: {expected} (from station file ../bench/station.toml)\n"


def test_nvmlab_db_beats_the_station_file(places, capsys, monkeypatch) -> None:
    env_db = places["work"] / "env.sqlite"
    monkeypatch.setenv("NVMLAB_DB", f"sqlite:///{env_db}")
    assert _add_chip(["--station", str(places["file"])], "C-env") == 0
    assert _stderr(capsys) == [f"database: sqlite:///{env_db} (from $NVMLAB_DB)"]
    assert _chips(env_db) == ["C-env"]
    assert not (places["station"] / "lab.sqlite").exists()


def test_db_beats_nvmlab_db_and_the_station_file_and_prints_nothing(
    places, capsys, monkeypatch
) -> None:
    cli_db = places["work"] / "cli.sqlite"
    monkeypatch.setenv("NVMLAB_DB", f"sqlite:///{places['work'] / 'env.sqlite'}")
    assert (
        _add_chip(["--db", f"sqlite:///{cli_db}", "--station", str(places["file"])], "C-cli") == 0
    )
    assert _stderr(capsys) == []
    assert _chips(cli_db) == ["C-cli"]
    assert sorted(p.name for p in places["work"].iterdir()) == ["cli.sqlite"]
    assert not (places["station"] / "lab.sqlite").exists()


def test_a_station_file_without_database_falls_back_to_the_default(places, capsys) -> None:
    bare = places["station"] / "bare.toml"
    bare.write_text('[station]\nname = "bare"\n')
    assert _add_chip(["--station", str(bare)], "C-bare") == 0
    assert _stderr(capsys)[0].startswith("database: sqlite:///./nvmlab.sqlite (default")
    assert _chips(places["work"] / "nvmlab.sqlite") == ["C-bare"]


def test_a_station_file_on_postgresql_with_its_password_masked(
    places, capsys, empty_url: str
) -> None:
    """The station file names the database on either engine; a password in it is never
    printed (here an unreachable server with one)."""
    station = places["station"] / "engine.toml"
    station.write_text(f'[station]\ndatabase = "{empty_url}"\n')
    assert _add_chip(["--station", str(station)], "C-engine") == 0
    capsys.readouterr()
    assert main(["chip", "list", "--db", empty_url]) == 0
    assert "C-engine" in capsys.readouterr().out

    station.write_text(
        f'[station]\ndatabase = "postgresql+psycopg://lab:{SECRET}@127.0.0.1:1/results"\n'
    )
    assert main(["runs", "--station", str(station)]) == 1
    err = _stderr(capsys)
    assert err[0] == (
        f"database: postgresql+psycopg://lab:***@127.0.0.1:1/results (from station file {station})"
    )
    assert len(err) == 2 and "is unreachable" in err[1]
    assert SECRET not in "\n".join(err)


@pytest.mark.parametrize(
    ("content", "field", "message"),
    [
        (None, "file", "cannot be read: No such file or directory"),
        ("[station\n", "TOML syntax", "line 1"),
        ("station = 3\n", "station", "must be a table ([station]), got 3 (int)"),
        ("[station]\ndatabase = 5\n", "station.database", "must be a string"),
        ('[station]\ndatabase = "  "\n', "station.database", "must not be empty"),
    ],
    ids=["missing", "syntax", "not-a-table", "not-a-string", "empty"],
)
def test_a_bad_station_file_is_one_line_naming_file_and_field(
    places, capsys, content: str | None, field: str, message: str
) -> None:
    path = places["station"] / "bad.toml"
    if content is not None:
        path.write_text(content)
    assert main(["runs", "--station", str(path)]) == 1
    err = _stderr(capsys)
    assert len(err) == 1 and err[0].startswith(f"nvmlab: error: {path}: {field}: "), err
    assert message in err[0]
    assert list(places["work"].iterdir()) == []


def test_a_bad_station_file_is_not_read_when_db_or_nvmlab_db_decides(
    places, capsys, monkeypatch
) -> None:
    missing = str(places["station"] / "missing.toml")
    assert main(["db", "upgrade", "--db", "sqlite:///cli.sqlite", "--station", missing]) == 0
    monkeypatch.setenv("NVMLAB_DB", "sqlite:///cli.sqlite")
    assert main(["db", "current", "--station", missing]) == 0
    assert _stderr(capsys) == ["database: sqlite:///cli.sqlite (from $NVMLAB_DB)"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_storage_command_takes_station_and_states_the_precedence(
    command: str, places, capsys, tmp_path: Path
) -> None:
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in COMMANDS[command]]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--station FILE" in text
    assert (
        "--db wins over $NVMLAB_DB, which wins over a job file's database (job commands), "
        "which wins over the --station file's [station] database, else ./nvmlab.sqlite"
    ) in text
    # and the option is wired: the command uses the station file's database
    assert main(["db", "upgrade", "--station", str(places["file"])]) == 0
    capsys.readouterr()
    code = main([*argv, "--station", str(places["file"])])
    err = _stderr(capsys)
    assert err[0] == (
        f"database: sqlite:///{places['station'] / 'lab.sqlite'} "
        f"(from station file {places['file']})"
    )
    if command == "export":  # no run 1 in the station's database: said so, on one line
        assert code == 1 and "no run 1 in database" in err[1]
    else:
        assert code == 0, err
    assert not (places["work"] / "nvmlab.sqlite").exists()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///lab.sqlite",
        "sqlite:///data/lab.sqlite?timeout=5",
        "sqlite+pysqlite:///lab.sqlite",
        "sqlite:////srv/lab.sqlite",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:lab.sqlite?mode=ro&uri=true",
        "sqlite:///C:/lab/lab.sqlite",
        "postgresql+psycopg://lab@db/results",
    ],
)
def test_storage_reads_the_station_database_as_the_instruments_layer_does(
    url: str, tmp_path: Path
) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        f'[station]\ndatabase = "{url}"\n\n'
        '[instruments.smu]\ndriver = "keithley2400"\nresource = "ASRL/dev/ttyUSB0::INSTR"\n'
    )
    config: StationConfig = load_station_file(path)
    assert station_file_database(path) == config.database_url
    assert resolve_sqlite_path(url, tmp_path) == instruments_resolve(url, tmp_path)
    assert resolve_sqlite_path(url, None) == url
