"""Atomic chip state files.

A state file is a NumPy ``.npz`` archive holding every per-device array plus one JSON
document (``meta``: the kind, the geometry, the parameters, the noise generator's state).
It is written to a temporary file in the same directory, flushed and fsynced, then
renamed over the old file with :func:`os.replace`, so a process killed at any instant
leaves either the old or the new state on disk, never a mixture. The directory entry is
fsynced too where the platform allows it. A process killed between creating the temporary
file and renaming it leaves that temporary behind; :func:`remove_stale_temporaries` (run
when a bench opens its state file) deletes such leftovers.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nvmlab.errors import ConfigError
from nvmlab.mocks.physics.params import to_table

_META_KEY = "__meta_json__"


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: Path | str) -> list[Path]:
    """Delete temporaries of :func:`save_state_file` for ``path`` left by a killed process.

    Returns the files removed. Only one process may use a state file at a time."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    removed = []
    for candidate in directory.glob(f"{_temporary_prefix(path)}*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def save_state_file(path: Path | str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` and the JSON-serialisable ``meta`` to ``path`` atomically."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    payload: dict[str, Any] = dict(arrays)
    payload[_META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_state_file(
    path: Path | str, *, kind: str, rows: int, cols: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a state file written by :func:`save_state_file`; check it belongs to a
    ``kind`` array of ``rows`` x ``cols`` devices (ConfigError otherwise)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.array(data[k]) for k in data.files if k != _META_KEY}
            meta = json.loads(bytes(data[_META_KEY]).decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a state file"
        raise ConfigError(
            f"cannot read chip state file: {reason}; delete it or pass another --state-file "
            "(a new chip is then drawn from the seed)",
            file=str(path),
        ) from exc
    found = (meta.get("kind"), meta.get("rows"), meta.get("cols"))
    if found != (kind, rows, cols):
        raise ConfigError(
            f"state file holds a {found[0]} array of {found[1]} x {found[2]}; "
            f"this bench has a {kind} array of {rows} x {cols}",
            file=str(path),
        )
    return arrays, meta


def read_state_meta(path: Path | str) -> dict[str, Any]:
    """The JSON document (``meta``) of a state file: its kind, geometry, seed, parameters
    and, when the writer knew it, ``clock_s``. ConfigError names an unreadable file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data[_META_KEY]).decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a state file"
        raise ConfigError(f"cannot read chip state file: {reason}", file=str(path)) from exc
    if not isinstance(meta, dict) or not all(k in meta for k in ("kind", "rows", "cols")):
        raise ConfigError(
            "cannot read chip state file: its meta document lacks kind, rows or cols",
            file=str(path),
        )
    return meta


def rng_state_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """The bit generator state of ``rng`` as JSON-compatible data."""
    state = rng.bit_generator.state
    return json.loads(json.dumps(state, default=int))


def rng_from_json(state: dict[str, Any]) -> np.random.Generator:
    """A generator restored from :func:`rng_state_to_json` output."""
    bit_gen = getattr(np.random, state["bit_generator"])()
    bit_gen.state = state
    return np.random.Generator(bit_gen)


class ChipState:
    """``save_state`` / ``load_state`` of :class:`~nvmlab.mocks.physics.base.ArrayPhysics`
    for an array whose whole chip is a set of named per-device numpy arrays.

    A subclass names those arrays in ``state_arrays`` (fixed parameters and state alike)
    and its parameter dataclass in ``params_class``; it keeps ``kind``, ``rows``, ``cols``,
    ``seed``, ``params`` and its noise generator ``_noise``. The file also holds the
    parameters and the noise generator's state, so a restored chip continues exactly.
    """

    state_arrays: ClassVar[tuple[str, ...]] = ()
    #: Arrays that state files written by older versions lack, with the value they load
    #: as (a scalar broadcast to the array's shape and dtype).
    optional_state_arrays: ClassVar[dict[str, Any]] = {"pulse_count": 0}
    params_class: ClassVar[type]
    kind: str
    rows: int
    cols: int
    seed: int
    params: Any
    _noise: np.random.Generator

    def save_state(self, path: Path, *, clock_s: float | None = None) -> None:
        """Write every parameter and state array atomically (see :func:`save_state_file`);
        ``clock_s`` (s) is the bench clock's time at which this state holds."""
        arrays = {name: getattr(self, name) for name in self.state_arrays}
        meta = {
            "kind": self.kind,
            "rows": self.rows,
            "cols": self.cols,
            "seed": self.seed,
            "params": to_table(self.params),
            "noise_rng": rng_state_to_json(self._noise),
            "clock_s": None if clock_s is None else float(clock_s),
        }
        save_state_file(path, arrays, meta)

    def load_state(self, path: Path) -> None:
        """Restore exactly the chip written by :meth:`save_state` (no seed needed)."""
        arrays, meta = load_state_file(path, kind=self.kind, rows=self.rows, cols=self.cols)
        missing = [
            n for n in self.state_arrays if n not in arrays and n not in self.optional_state_arrays
        ]
        if missing:
            raise ConfigError(f"state file lacks arrays {', '.join(missing)}", file=str(path))
        self.params = self.params_class(**meta["params"])
        self.seed = int(meta["seed"])
        for name in self.state_arrays:
            if name in arrays:
                setattr(self, name, np.array(arrays[name]))
            else:  # written before this array existed
                old = getattr(self, name)
                setattr(self, name, np.full(old.shape, self.optional_state_arrays[name], old.dtype))
        self._noise = rng_from_json(meta["noise_rng"])
        self._state_loaded()

    def _state_loaded(self) -> None:
        """Hook: recompute whatever the array caches from its state (default: nothing)."""
