"""The station file's ``database`` key: read, resolved against the file's folder, exposed.

The URL precedence (``--db`` > ``NVMLAB_DB`` > job or station file > ``./nvmlab.sqlite``)
is applied by ``nvmlab.storage``; the station's part is to hand over its URL, a relative
SQLite path made absolute against the station file's folder (``docs/station-file.md``),
so a station file names the same database whichever folder a command runs from.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nvmlab.instruments.station import Station, StationConfig, load_station_file

BOARD = '[instruments.board]\ndriver = "probe_board"\nresource = "/dev/ttyUSB0"\n'


def station_file(folder: Path, database: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = '[station]\nname = "db-test"\n'
    if database is not None:
        header += f'database = "{database}"\n'
    path = folder / "station.toml"
    path.write_text(header + BOARD, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("sqlite:///lab.sqlite", "sqlite:///{folder}/lab.sqlite"),
        ("sqlite:///data/lab.sqlite", "sqlite:///{folder}/data/lab.sqlite"),
        ("sqlite:///../shared/lab.sqlite", "sqlite:///{folder}/../shared/lab.sqlite"),
        (
            "sqlite+pysqlite:///lab.sqlite?timeout=5",
            "sqlite+pysqlite:///{folder}/lab.sqlite?timeout=5",
        ),
        ("sqlite:////srv/nvm/lab.sqlite", "sqlite:////srv/nvm/lab.sqlite"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        (
            "postgresql+psycopg://lab@db.example/nvm",
            "postgresql+psycopg://lab@db.example/nvm",
        ),
    ],
)
def test_the_database_url_is_resolved_against_the_station_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, expected: str
) -> None:
    folder = tmp_path / "benches" / "probe-2"
    path = station_file(folder, written)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a command run from another folder
    config = load_station_file(path)
    assert config.database == written  # the key as written
    assert config.database_url == expected.format(folder=folder.resolve())
    assert Station(config).database_url == config.database_url


def test_a_relative_path_given_to_the_loader_still_resolves_to_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    station_file(tmp_path / "bench", "sqlite:///lab.sqlite")
    monkeypatch.chdir(tmp_path)
    config = load_station_file(os.path.join("bench", "station.toml"))
    assert config.database_url == f"sqlite:///{(tmp_path / 'bench').resolve()}/lab.sqlite"


def test_no_database_key_means_no_url(tmp_path: Path) -> None:
    config = load_station_file(station_file(tmp_path, None))
    assert config.database is None and config.database_url is None
    assert Station.from_file(tmp_path / "station.toml").database_url is None


def test_a_station_from_a_dict_keeps_its_url_as_given() -> None:
    # No file, no folder: the URL is handed over unchanged (relative to the working folder).
    data = {"station": {"database": "sqlite:///lab.sqlite"}, "instruments": {}}
    data["instruments"]["board"] = {"driver": "probe_board", "resource": "/dev/ttyUSB0"}
    assert StationConfig.from_dict(data).database_url == "sqlite:///lab.sqlite"
