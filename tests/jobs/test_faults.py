"""Faults on the emulated bench (its fault injection, docs/bench-file.md): each transient
fault lets the job complete with every unit stored once and the event recorded; only a
persistent fault ends it, failed and resumable, in the safe state; the limits are never
exceeded by what the emulated instruments applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobhelp import assert_every_unit_completed_once, events, runs, write_job

from nvmlab.jobs.jobfile import load_job_file
from nvmlab.jobs.runner import run_job
from nvmlab.storage import open_database

#: Faults, each as a bench file's [[faults.ROLE]] table, and the event source expected.
TRANSIENT = {
    "smu-timeout": ("smu", 'kind = "late"\nmessages = [150]\ndelay_s = 10.0'),
    "smu-garbled": ("smu", 'kind = "garble"\nmessages = [220]'),
    "smu-dropped-connection": ("smu", 'kind = "close"\nmessages = [300]'),
    "board-dropped-connection": ("board", 'kind = "close"\nmessages = [400]'),
}


def _bench_file(folder: Path, role: str, fault: str) -> str:
    (folder / "bench.toml").write_text(f"[[faults.{role}]]\n{fault}\n")
    return "bench.toml"


def _run(folder: Path, **kwargs: object):
    url = f"sqlite:///{folder / 'lab.sqlite'}"
    with open_database(url, create=True) as db:
        result = run_job(load_job_file(folder / "job.toml"), db=db)
    return result, url


def _within_limits(result) -> None:
    """What the emulated instruments applied, against the station's limits (the emulated
    bench's station: 2.5 V write, 0.5 V read on the SMU, 1 mA)."""
    assert result.applied_max_v["board"] <= 2.5 + 1e-9
    assert max(v for k, v in result.applied_max_v.items() if k != "board") <= 2.5 + 1e-9
    assert max(result.applied_max_a.values()) <= 1e-3 + 1e-12


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_a_transient_fault_is_recorded_and_ridden_out(tmp_path: Path, name: str) -> None:
    role, fault = TRANSIENT[name]
    write_job(tmp_path, bench_file=_bench_file(tmp_path, role, fault),
              extra="\n[faults]\nbackoff_s = 0.5\n")  # fmt: skip
    result, url = _run(tmp_path)
    assert result.status == "completed", result.message
    assert_every_unit_completed_once(url)
    stored = events(url)
    faults = [e for e in stored if e["level"] == "fault"]
    recoveries = [e for e in stored if e["level"] == "recovery"]
    assert faults and recoveries, stored
    assert faults[0]["source"] == role
    assert "reconnected" in recoveries[0]["message"]
    # the unit in flight was redone: its failed attempt is kept, marked failed
    assert result.events["fault"] >= 1
    _within_limits(result)


@pytest.mark.timeout(300)
def test_a_chamber_alarm_that_clears_suspends_the_job_which_then_completes(
    tmp_path: Path,
) -> None:
    fault = 'kind = "alarm"\nat_s = 20.0\nduration_s = 900.0\nmessage = "HEATER OVERLOAD"'
    write_job(tmp_path, bench_file=_bench_file(tmp_path, "chamber", fault),
              extra="\n[faults]\npoll_s = 60.0\nsuspend_timeout_s = 3600.0\n")  # fmt: skip
    result, url = _run(tmp_path)
    assert result.status == "completed", result.message
    assert_every_unit_completed_once(url)
    stored = events(url)
    suspended = [e for e in stored if e["level"] == "warning" and "suspended" in e["message"]]
    resumed = [e for e in stored if e["level"] == "recovery" and e["source"] == "chamber"]
    # the Espec names its alarm by code, in its own words
    assert suspended and "alarm stop" in suspended[0]["message"]
    assert resumed and resumed[0]["t_s"] - suspended[0]["t_s"] >= 800.0
    _within_limits(result)


@pytest.mark.timeout(300)
def test_an_alarm_that_stays_fails_the_run_safely_and_resumably(tmp_path: Path) -> None:
    fault = 'kind = "alarm"\nat_s = 20.0\nmessage = "DOOR OPEN"'  # never clears
    write_job(tmp_path, bench_file=_bench_file(tmp_path, "chamber", fault),
              extra="\n[faults]\npoll_s = 60.0\nsuspend_timeout_s = 600.0\n")  # fmt: skip
    result, url = _run(tmp_path)
    assert result.status == "failed"
    message = result.message or ""
    assert "alarm" in message and "suspend_timeout_s" in message and "NOT SAFE" not in message
    assert [r["status"] for r in runs(url)] == ["failed"]
    assert not [e for e in events(url) if e["level"] == "recovery"]
    _within_limits(result)


@pytest.mark.timeout(300)
def test_a_persistent_fault_ends_the_run_failed_in_the_safe_state_then_resume_completes(
    tmp_path: Path,
) -> None:
    # every SMU reply from the 200th to the 700th is garbled: more than the retries absorb
    fault = 'kind = "garble"\nevery = 1\nstart = 200\nstop = 700'
    write_job(tmp_path, bench_file=_bench_file(tmp_path, "smu", fault),
              extra="\n[faults]\nretries = 2\nbackoff_s = 0.5\n")  # fmt: skip
    result, url = _run(tmp_path)
    assert result.status == "failed", result.message
    assert "giving up" in " ".join(e["message"] for e in events(url))
    assert "NOT SAFE" not in (result.message or ""), result.message
    _within_limits(result)
    # resumable: the bench of a new process has no faults left to fire (a fresh count)
    (tmp_path / "bench.toml").write_text("")
    with open_database(url) as db:
        again = run_job(load_job_file(tmp_path / "job.toml"), db=db, resume=result.run_id)
    assert again.status == "completed", again.message
    assert_every_unit_completed_once(url)
