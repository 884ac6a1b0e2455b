"""Recordings of a job's run: the instruments' transcripts and what replaying them needs.

``nvmlab run JOB --record DIR`` fills a new folder ``DIR`` (refused when it exists and is
not empty, so a recording is never replaced)::

    DIR/recording.json      what it holds: format, run id, job name, chip, versions, when
    DIR/job.toml            the job file as it ran
    DIR/station.json        the station's configuration (instruments, limits)
    DIR/transcripts/*.jsonl every exchange with each instrument (nvmlab.drivers.recording)
    DIR/clock.jsonl         every reading of the station's clock, in order

``nvmlab replay DIR`` re-runs the job against the transcripts, without any instrument or
emulator, into a new run of the database: the same commands must be sent (a command that
differs stops the replay, naming the transcript line), the same replies come back, so every
stored value is the same; the station's clock is served from ``clock.jsonl``, so the
times stored are those of the recorded run (the transcript's clock).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
from pathlib import Path
from typing import Any

from nvmlab import __version__
from nvmlab.errors import ConfigError

__all__ = [
    "ClockRecorder",
    "ClockReplayer",
    "RECORDING_FORMAT",
    "attach_clock_recorder",
    "check_new_folder",
    "detach_clock_recorder",
    "finish_recording",
    "station_data",
    "prepare_recording",
    "read_recording",
    "replay_station",
]

RECORDING_FORMAT = 1
INFO = "recording.json"
TRANSCRIPTS = "transcripts"
CLOCK = "clock.jsonl"


class ClockRecorder:
    """A station clock that writes every reading of the clock it wraps to a file."""

    def __init__(self, inner: Any, path: Path) -> None:
        self.inner = inner
        self._file = path.open("a", encoding="utf-8")

    def now(self) -> float:
        value = float(self.inner.now())
        self._file.write(f"{value!r}\n")
        return value

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)

    def close(self) -> None:
        self._file.close()


class ClockReplayer:
    """Serves the readings of a recorded clock in order; past the end it goes on as a
    virtual clock from the last reading (sleeps advance it)."""

    def __init__(self, path: Path) -> None:
        self._values = [float(line) for line in path.read_text().split()] if path.is_file() else []
        self._pos = 0
        self._after = self._values[-1] if self._values else 0.0

    def now(self) -> float:
        if self._pos < len(self._values):
            value = self._values[self._pos]
            self._pos += 1
            return value
        return self._after

    def sleep(self, seconds: float) -> None:
        if self._pos >= len(self._values):
            self._after += max(0.0, float(seconds))


def check_new_folder(folder: str | Path) -> None:
    """Refuse a recording folder that exists and is not empty (never replace one)."""
    path = Path(folder)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        what = "a recording" if (path / INFO).is_file() else "files"
        raise ConfigError(
            f"{path} already holds {what}; allowed: a new or empty folder (a recording is "
            "never replaced)",
            field="--record",
        )


def prepare_recording(folder: str | Path, job: Any, station_config: dict[str, Any]) -> Path:
    """Create recording folder ``folder`` for ``job`` (refused when it holds anything)."""
    path = Path(folder)
    check_new_folder(path)
    try:
        (path / TRANSCRIPTS).mkdir(parents=True, exist_ok=True)
        (path / "job.toml").write_text(job.text, encoding="utf-8")
        (path / "station.json").write_text(json.dumps(station_config, indent=1) + "\n")
        inputs = path / "inputs"
        for step in job.steps:
            for param in step.step_kind.params:
                value = step.params.get(param.name)
                if param.path == "in" and isinstance(value, str):
                    inputs.mkdir(exist_ok=True)
                    shutil.copyfile(value, inputs / Path(value).name)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}", field="--record") from None
    return path


def finish_recording(
    folder: Path, *, run_id: int, job: Any, status: str, chip: tuple[str, str, int, int]
) -> None:
    """Write ``recording.json`` (called when the recorded run has ended)."""
    import numpy
    import pyvisa

    info = {
        "format": RECORDING_FORMAT,
        "run_id": run_id,
        "status": status,
        "job": job.name,
        "job_file": str(job.source.resolve()),
        "chip": chip[0],
        "chip_shape": list(chip[1:]),
        "seed": job.seed,
        "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "nvmlab": __version__,
            "python": platform.python_version(),
            "pyvisa": pyvisa.__version__,
            "numpy": numpy.__version__,
        },
        "transcripts": sorted(p.name for p in (folder / TRANSCRIPTS).glob("*.jsonl")),
    }
    (folder / INFO).write_text(json.dumps(info, indent=1) + "\n")


def read_recording(folder: str | Path) -> dict[str, Any]:
    """The ``recording.json`` of ``folder`` with counts of what it holds; ConfigError when
    the folder is not a finished recording."""
    path = Path(folder)
    info_path = path / INFO
    if not info_path.is_file():
        raise ConfigError(
            f"{path} is not a recording (no {INFO}; 'nvmlab run JOB --record DIR' makes one, "
            "and writes it when the run ends)",
            field="DIR",
        )
    info: dict[str, Any] = json.loads(info_path.read_text())
    if info.get("format") != RECORDING_FORMAT:
        raise ConfigError(
            f"{info_path}: format {info.get('format')!r}; allowed: {RECORDING_FORMAT}",
            field="DIR",
        )
    exchanges = {}
    for transcript in sorted((path / TRANSCRIPTS).glob("*.jsonl")):
        with transcript.open() as f:
            exchanges[transcript.stem] = sum(1 for _ in f)
    info["exchanges"] = exchanges
    clock = path / CLOCK
    if clock.is_file():
        with clock.open() as f:
            info["clock_readings"] = sum(1 for _ in f)
    return info


def attach_clock_recorder(station: Any, folder: Path) -> None:
    """Make ``station`` record its clock readings into ``folder``."""
    station.clock = ClockRecorder(station.clock, folder / CLOCK)


def detach_clock_recorder(station: Any) -> None:
    clock = getattr(station, "clock", None)
    if isinstance(clock, ClockRecorder):
        clock.close()


def station_data(folder: Path) -> dict[str, Any]:
    """The station configuration a recording was made with."""
    data: dict[str, Any] = json.loads((Path(folder) / "station.json").read_text())
    return data


def replay_station(folder: Path) -> Any:
    """A station served from the recording in ``folder`` (no instrument, no emulator)."""
    from nvmlab.instruments.station import Station

    return Station(
        station_data(folder), replay_from=folder / TRANSCRIPTS, clock=ClockReplayer(folder / CLOCK)
    )
