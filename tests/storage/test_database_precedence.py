"""Which database a command uses: ``--db`` > ``NVMLAB_DB`` > job file > station file >
``./nvmlab.sqlite``, each level tested, and the level that won is reported."""

from __future__ import annotations

import itertools

import pytest

from nvmlab.storage.engine import (
    DATABASE_ENV,
    DEFAULT_DATABASE_URL,
    DatabaseChoice,
    resolve_database,
    resolve_database_url,
)

LEVELS = {
    "--db": "sqlite:///cli.sqlite",
    "NVMLAB_DB": "postgresql+psycopg://lab@db/env",
    "job file": "sqlite:///job.sqlite",
    "station file": "sqlite:///station.sqlite",
}
ORDER = ["--db", "NVMLAB_DB", "job file", "station file"]


def _resolve(given: set[str], blank: str = "") -> DatabaseChoice:
    def value(level: str) -> str | None:
        return LEVELS[level] if level in given else (blank or None)

    env = {DATABASE_ENV: value("NVMLAB_DB")} if value("NVMLAB_DB") is not None else {}
    return resolve_database(
        value("--db"),
        job_file_url=value("job file"),
        station_file_url=value("station file"),
        env=env,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "given",
    [set(c) for n in range(len(ORDER) + 1) for c in itertools.combinations(ORDER, n)],
    ids=lambda g: "+".join(sorted(g, key=ORDER.index)) or "nothing",
)
def test_the_highest_level_given_wins_and_is_named(given: set[str]) -> None:
    winner = next((level for level in ORDER if level in given), None)
    choice = _resolve(given)
    if winner is None:
        assert choice == (DEFAULT_DATABASE_URL, "default")
        assert DEFAULT_DATABASE_URL == "sqlite:///./nvmlab.sqlite"
    else:
        assert choice == (LEVELS[winner], winner)
    url, source = choice  # unpacks as a pair
    assert (url, source) == (choice.url, choice.source)


@pytest.mark.parametrize("level", ORDER)
def test_an_empty_or_blank_value_counts_as_unset(level: str) -> None:
    below = ORDER[ORDER.index(level) + 1 :]
    for blank in ("", "   "):
        choice = _resolve({*below}, blank=blank)
        expected = below[0] if below else None
        assert choice.source == (expected or "default")


def test_values_are_stripped_and_the_process_environment_is_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DATABASE_ENV, "  sqlite:///from-env.sqlite \n")
    assert resolve_database(None, station_file_url="sqlite:///s.sqlite") == (
        "sqlite:///from-env.sqlite",
        "NVMLAB_DB",
    )
    monkeypatch.delenv(DATABASE_ENV)
    assert resolve_database(None, station_file_url="sqlite:///s.sqlite").source == "station file"


def test_the_older_two_argument_form_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATABASE_ENV, raising=False)
    assert resolve_database_url(None, None) == DEFAULT_DATABASE_URL
    assert resolve_database_url(None, "sqlite:///job.sqlite") == "sqlite:///job.sqlite"
    assert (
        resolve_database_url("sqlite:///c.sqlite", "sqlite:///job.sqlite") == "sqlite:///c.sqlite"
    )
