"""Reading back (numpy / pandas), export, the CLI, and bad input: errors, masking, read-only."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from nvmlab.cli import main
from nvmlab.errors import StorageError
from nvmlab.storage import (
    RecordWriter,
    conductance_map,
    device_history,
    ensure_chip,
    fetch_arrays,
    finish_run,
    load_reads,
    open_database,
    resolve_database_url,
    start_run,
)
from nvmlab.storage.database import head_revision
from nvmlab.storage.engine import DEFAULT_DATABASE_URL, mask_text, mask_url

SECRET = "s3cr3t-Pa55"


def _tuned_run(db, chip: int, *, scale: float = 1.0) -> int:
    """A small tuning run on a 16 x 16 chip: 2 pulses and 2 reads per device of row 0..3."""
    run = start_run(db, "tune", chip_id=chip, config={"scale": scale})
    with RecordWriter(db, run, chip_id=chip, background=False) as w:
        for r in range(4):
            with w.unit(f"row:{r}", kind="tune", row=r):
                for c in range(16):
                    for k in range(2):
                        w.add_pulse(r, c, 1.0 + 0.1 * k, 1e-6, 1 if k == 0 else -1, "V/2")
                        w.add_read(r, c, 0.2, scale * 1e-6 * (r * 16 + c + k), temperature_c=25.0)
                    w.add_tuning_outcome(r, c, target_s=1e-5, final_s=1.01e-5, pulse_count=2)
        w.add_trace(
            0, 0, "noise", np.arange(5.0), np.array([1.0, 1.1, 0.9, 1.0, 1.05]), x_name="t_s"
        )
        w.add_event("warning", "chamber overshoot", source="chamber")
    finish_run(db, run, "completed")
    return run


def test_numpy_and_pandas_views_of_reads(db, chip) -> None:
    run = _tuned_run(db, chip)
    arrays = fetch_arrays(db, "reads", run_id=run)
    assert arrays["current_a"].dtype == np.float64 and arrays["row"].dtype == np.int64
    assert arrays["current_a"].shape == (4 * 16 * 2,)
    assert np.array_equal(arrays["current_a"][:4], 1e-6 * np.array([0.0, 1.0, 1.0, 2.0]))
    frame = load_reads(db, run, columns=["row", "col", "conductance_s"])
    assert list(frame.columns) == ["row", "col", "conductance_s"] and len(frame) == 128
    gmap = conductance_map(db, run)
    assert gmap.shape == (16, 16)
    # Last read of device (3, 5) is k=1: I = 1e-6 * (3*16 + 5 + 1) at 0.2 V.
    assert gmap[3, 5] == pytest.approx(1e-6 * 54 / 0.2)
    assert np.isnan(gmap[4:]).all()  # rows never read


def test_one_device_across_runs(db, chip) -> None:
    first = _tuned_run(db, chip, scale=1.0)
    second = _tuned_run(db, chip, scale=2.0)
    history = device_history(db, chip, 2, 7)
    assert history["run_id"].tolist() == [first, first, second, second]
    assert history["current_a"].tolist() == pytest.approx(
        [1e-6 * 39, 1e-6 * 40, 2e-6 * 39, 2e-6 * 40]
    )
    other = ensure_chip(db, "other", array_kind="eflash", n_rows=8, n_cols=8)
    assert device_history(db, other, 2, 7).empty


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_every_table_and_matches_the_database(db, chip, tmp_path: Path, fmt) -> None:
    run = _tuned_run(db, chip)
    url = db.url.render_as_string(hide_password=False)
    assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path), "--db", url]) == 0
    folder = tmp_path / f"run-{run}"
    names = {p.name for p in folder.iterdir()}
    tables = ("units", "pulses", "reads", "traces", "tuning_outcomes", "device_parameters",
              "chamber_log", "events")  # fmt: skip
    assert names == {"run.json"} | {f"{t}.{fmt}" for t in tables}
    meta = json.loads((folder / "run.json").read_text())
    assert meta["status"] == "completed" and meta["config"] == {"scale": 1.0}
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    reads = read(folder / f"reads.{fmt}")
    stored = load_reads(db, run)
    assert len(reads) == len(stored) == 128
    assert np.array_equal(reads["current_a"].to_numpy(), stored["current_a"].to_numpy())
    pulses = read(folder / f"pulses.{fmt}")
    assert sorted(set(pulses["polarity"])) == [-1, 1] and set(pulses["scheme"]) == {"V/2"}
    traces = read(folder / f"traces.{fmt}")
    y = json.loads(traces.loc[0, "y"]) if fmt == "csv" else list(traces.loc[0, "y"])
    assert y == [1.0, 1.1, 0.9, 1.0, 1.05]
    units = read(folder / f"units.{fmt}")
    assert sorted(units["status"]) == ["completed"] * 4


def test_runs_command_lists_runs_with_status(db, chip, capsys) -> None:
    done = _tuned_run(db, chip)
    running = start_run(db, "characterize", chip_id=chip)
    url = db.url.render_as_string(hide_password=False)
    assert main(["runs", "--db", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["id", "kind", "status", "chip"]
    rows = {int(line.split()[0]): line.split() for line in lines[1:]}
    assert rows[done][1:4] == ["tune", "completed", "W07-D12"]
    assert rows[running][1:3] == ["characterize", "running"]


def test_unknown_run_fails_cleanly_and_writes_nothing(db, chip, tmp_path: Path, capsys) -> None:
    _tuned_run(db, chip)
    url = db.url.render_as_string(hide_password=False)
    out = tmp_path / "out"
    assert main(["export", "4242", "--format", "csv", "--out", str(out), "--db", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"nvmlab: error: no run 4242 in database {mask_url(url)}; 'nvmlab runs' lists them"
    ]
    assert not out.exists()
    assert main(["export", "abc", "--out", str(out), "--db", url]) == 1
    assert "run id 'abc' is not a number" in capsys.readouterr().err


def _with_password(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url
    return parsed.set(password=SECRET).render_as_string(hide_password=False)


def test_passwords_are_never_shown(db, chip, capsys, caplog, tmp_path: Path) -> None:
    """PostgreSQL trust auth accepts any password: connect with one and hunt for it."""
    if db.dialect == "sqlite":
        url = f"postgresql+psycopg://lab:{SECRET}@127.0.0.1:1/results"  # unreachable server
    else:
        url = _with_password(db.url.render_as_string(hide_password=False))
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    if db.dialect == "postgresql":
        with open_database(url) as secret_db:
            texts.append(repr(secret_db))
            texts.append(str(secret_db.url))
            run = start_run(secret_db, "x", chip_id=chip)
            writer = RecordWriter(secret_db, run, chip_id=chip)
            texts.append(repr(writer))
            writer.close()
            with pytest.raises(StorageError) as info:
                load_reads(secret_db, 777777)
            texts.append(str(info.value))
            assert "***" in str(info.value)
        assert main(["export", "777777", "--out", str(tmp_path), "--db", url]) == 1
    else:
        with pytest.raises(StorageError) as info:
            open_database(url)
        texts.append(str(info.value))
        assert "unreachable" in str(info.value) and "lab:***@127.0.0.1:1" in str(info.value)
        assert main(["runs", "--db", url]) == 1
    captured = capsys.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    assert captured.err.startswith("nvmlab: error: ") and "***" in captured.err
    for shown in texts:
        assert SECRET not in shown
    assert mask_text(f"failed for {url} (password {SECRET})", url).count(SECRET) == 0


def test_read_only_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite"
    db = open_database(f"sqlite:///{path}")
    chip = ensure_chip(db, "c", array_kind="memristor", n_rows=4, n_cols=4)
    run = _tuned_run_small(db, chip)
    db.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # Tests run as root, where file permissions do not stop writes: open read-only by URI.
    ro_url = f"sqlite:///file:{path}?mode=ro"
    ro = open_database(ro_url, create=False)
    assert load_reads(ro, run)["current_a"].tolist() == [1e-6]  # reading works
    with pytest.raises(StorageError, match=r"database .* is read-only .*nothing was stored"):
        start_run(ro, "more")
    writer = RecordWriter(ro, run, chip_id=chip, background=False)
    writer.add_read(0, 0, 0.2, 1e-6)
    with pytest.raises(StorageError, match="flush \\(1 records of run .*is read-only"):
        writer.flush()
    # The refused record stays buffered (not silently dropped): closing reports it again.
    with pytest.raises(StorageError, match="is read-only"):
        writer.close()
    ro.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert main(["db", "upgrade", "--db", ro_url]) == 0  # already current: nothing to write


def _tuned_run_small(db, chip: int) -> int:
    run = start_run(db, "tiny", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w:
        w.add_read(0, 0, 0.2, 1e-6)
    return run


def test_unreachable_server_is_one_clear_line(capsys) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nvmlab"
    assert main(["db", "upgrade", "--db", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "database server postgresql+psycopg://postgres@127.0.0.1:1/nvmlab is unreachable"
        in err[0]
    )
    with pytest.raises(StorageError, match="unsupported database 'mysql://x/y'"):
        open_database("mysql://x/y")


def test_database_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVMLAB_DB", raising=False)
    assert resolve_database_url(None, None) == DEFAULT_DATABASE_URL == "sqlite:///./nvmlab.sqlite"
    assert resolve_database_url(None, "sqlite:///job.sqlite") == "sqlite:///job.sqlite"
    monkeypatch.setenv("NVMLAB_DB", "postgresql+psycopg://lab@db/results")
    assert (
        resolve_database_url(None, "sqlite:///job.sqlite") == "postgresql+psycopg://lab@db/results"
    )
    assert (
        resolve_database_url("sqlite:///cli.sqlite", "sqlite:///job.sqlite")
        == "sqlite:///cli.sqlite"
    )
    monkeypatch.setenv("NVMLAB_DB", "")
    assert resolve_database_url("", "sqlite:///job.sqlite") == "sqlite:///job.sqlite"


def test_cli_uses_nvmlab_db_when_no_option(monkeypatch, tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'env.sqlite'}"
    monkeypatch.setenv("NVMLAB_DB", url)
    assert main(["db", "upgrade"]) == 0
    assert f"database {url} created at schema revision {head_revision()}" in capsys.readouterr().out
    assert main(["runs"]) == 0
    assert "no runs in" in capsys.readouterr().out


def test_nulls_come_back_as_nan_minus_one_and_none(db, chip) -> None:
    run = start_run(db, "nulls", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w:
        w.add_pulse(0, 0, 1.0, 1e-6, 1, None, t_s=1.0)  # no attempt, no scheme
        w.add_pulse(0, 1, 1.0, 1e-6, -1, "V/3", t_s=2.0)
        w.add_read(0, 0, 0.0, 0.0, temperature_c=None, t_s=3.0)  # 0 V: no conductance
    schemes = fetch_arrays(db, "pulses", columns=["scheme"], run_id=run)["scheme"]
    assert schemes.tolist() == [None, "V/3"]
    pulses = fetch_arrays(db, "pulses", run_id=run)
    assert pulses["attempt_id"].tolist() == [-1, -1] and pulses["polarity"].tolist() == [1, -1]
    reads = load_reads(db, run)
    assert np.isnan(reads.loc[0, "conductance_s"]) and np.isnan(reads.loc[0, "temperature_c"])
    assert reads["attempt_id"].isna().all() and str(reads["attempt_id"].dtype) == "Int64"


UNREACHABLE = f"postgresql+psycopg://lab:{SECRET}@127.0.0.1:1/results"


@pytest.mark.parametrize(
    "command",
    [["runs"], ["export", "1", "--out", "OUT"], ["db", "current"], ["db", "upgrade"]],
)
def test_an_unexpected_error_shows_a_masked_traceback(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    """A bug or a driver surprise (not a StorageError) while opening a real, unreachable
    server: the traceback is shown for the bug report, with the password masked."""
    import nvmlab.storage.database as database

    def buggy_engine(url, **kwargs):
        raise RuntimeError(f"driver broke on {UNREACHABLE} (password {SECRET!r})")

    monkeypatch.setattr(database, "create_engine_for", buggy_engine)
    argv = [str(tmp_path) if a == "OUT" else a for a in command]
    assert main([*argv, "--db", UNREACHABLE]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "buggy_engine" in err
    assert "driver broke on postgresql+psycopg://lab:***@127.0.0.1:1/results" in err
    assert err.rstrip().splitlines()[-1] == (
        "nvmlab: error: unexpected RuntimeError on database "
        "postgresql+psycopg://lab:***@127.0.0.1:1/results (traceback above, passwords "
        "masked); please report it"
    )
    assert SECRET not in err


def test_a_password_with_a_literal_at_sign_is_refused_and_masked(capsys) -> None:
    url = "postgresql+psycopg://lab:pa@ss-tail@127.0.0.1:1/results"
    assert main(["runs", "--db", url]) == 1
    err = capsys.readouterr().err
    assert "percent-encode it as %40" in err and "lab:***@127.0.0.1:1/results" in err
    assert "pa@ss" not in err and "ss-tail" not in err
