"""The typed chip profile: what characterization measures on a chip, for tuning and analysis.

A :class:`ChipProfile` names its chip (name, array kind, rows, cols) and holds

* optional per-device arrays, each of shape (rows, cols) (:data:`DEVICE_ARRAYS`): the
  defect class (0 functional, 1 stuck-off, 2 stuck-on, -1 not measured), set and reset thresholds (V), the
  temperature coefficient of the conductance (S/K), the read-noise standard deviation
  (S, at 1 PLC), the forming voltage (V) and the I-V nonlinearity (dimensionless). NaN
  marks a device where a quantity was not measured (a stuck device has no threshold);
* optional scalars: the safe read voltage (V) and the largest write amplitudes (V) under
  the V/2 and V/3 half-select schemes;
* ``meta``: free JSON (measurement conditions such as NPLC or temperature).

Names and definitions follow the emulator's ground truth where it has them
(``EmulatedBench.ground_truth()``; the device model is described in ``docs/devices.md``),
so a profile can be checked against the truth array by array.

Storage: :func:`save_profile` / :func:`load_profile` keep profiles in the database table
``chip_profiles`` (the scalars as columns, the arrays as one compressed NPZ blob, newest
profile of a chip first); :meth:`ChipProfile.to_npz` / :meth:`ChipProfile.from_npz` use a
plain ``.npz`` file that numpy reads without nvmlab.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import insert, select

from nvmlab.errors import StorageError
from nvmlab.storage.database import Database
from nvmlab.storage.inventory import require_chip
from nvmlab.storage.models import ARRAY_KINDS, ChipProfileRecord, utcnow

#: Per-device arrays: name -> (unit, what it is). All optional, shape (rows, cols).
DEVICE_ARRAYS: dict[str, tuple[str, str]] = {
    "defect_class": ("", "0 functional, 1 stuck-off, 2 stuck-on, -1 not measured (int8)"),
    "conductance_s": ("S", "conductance I(V_read)/V_read of the last map read"),
    "set_threshold_v": ("V", "set threshold (positive)"),
    "reset_threshold_v": ("V", "reset threshold (negative, as the ground truth)"),
    "temp_coeff_s_per_k": ("S/K", "temperature coefficient of the conductance"),
    "read_noise_sigma_s": ("S", "read-noise standard deviation at 1 PLC"),
    "forming_voltage_v": ("V", "forming voltage (positive)"),
    "iv_nonlinearity": ("", "I-V nonlinearity (dimensionless)"),
    "read_noise_rel": ("", "read-noise standard deviation relative to the conductance, 1 PLC"),
    "telegraph": ("", "1 telegraph (random telegraph) noise detected, 0 not, NaN not measured"),
    "drift_per_decade_rel": ("", "conductance drift per decade of time, relative (signed)"),
    "vth_v": ("V", "eFlash threshold voltage at 25 C"),
    "subthreshold_slope_v_per_decade": ("V/dec", "eFlash subthreshold slope at 25 C"),
    "vth_temp_coeff_v_per_k": ("V/K", "eFlash threshold voltage change with temperature"),
}
#: Scalars (V), each optional: name -> what it is.
SCALARS: dict[str, str] = {
    "safe_read_v": "read voltage that switches no device",
    "amplitude_cap_half_select_v": "largest write amplitude under the V/2 scheme",
    "amplitude_cap_third_select_v": "largest write amplitude under the V/3 scheme",
}
DEFECT_CLASSES = (-1, 0, 1, 2)
#: Sign rules of the float arrays: name -> (refused when, message tail).
_SIGN_RULES: dict[str, tuple[Any, str]] = {
    "set_threshold_v": (lambda a: a <= 0, "values <= 0 V; a set threshold is positive"),
    "reset_threshold_v": (lambda a: a >= 0, "values >= 0 V; a reset threshold is negative"),
    "read_noise_sigma_s": (lambda a: a < 0, "values < 0 S; a standard deviation is >= 0"),
    "read_noise_rel": (lambda a: a < 0, "values < 0; a standard deviation is >= 0"),
    "conductance_s": (lambda a: a < 0, "values < 0 S; a conductance read is >= 0"),
    "forming_voltage_v": (lambda a: a <= 0, "values <= 0 V; a forming voltage is positive"),
}
_FILE_KEY = "__nvmlab_chip_profile__"
_FORMAT = {"format": "nvmlab-chip-profile", "version": 1}


@dataclass
class ChipProfile:
    """A chip's characterized profile (see the module docstring); validated on creation
    and again when saved, every error naming the field."""

    chip: str
    kind: str
    rows: int
    cols: int
    defect_class: np.ndarray | None = None
    set_threshold_v: np.ndarray | None = None
    reset_threshold_v: np.ndarray | None = None
    temp_coeff_s_per_k: np.ndarray | None = None
    read_noise_sigma_s: np.ndarray | None = None
    forming_voltage_v: np.ndarray | None = None
    iv_nonlinearity: np.ndarray | None = None
    conductance_s: np.ndarray | None = None
    read_noise_rel: np.ndarray | None = None
    telegraph: np.ndarray | None = None
    drift_per_decade_rel: np.ndarray | None = None
    vth_v: np.ndarray | None = None
    subthreshold_slope_v_per_decade: np.ndarray | None = None
    vth_temp_coeff_v_per_k: np.ndarray | None = None
    safe_read_v: float | None = None
    amplitude_cap_half_select_v: float | None = None
    amplitude_cap_third_select_v: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: Set when loaded from the database: the profile's id and the run that produced it.
    profile_id: int | None = None
    run_id: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; normalize arrays (float64, defect class int8)."""
        if not isinstance(self.chip, str) or not self.chip.strip():
            raise StorageError(f"ChipProfile.chip = {self.chip!r}; must be a non-empty chip name")
        if self.kind not in ARRAY_KINDS:
            raise StorageError(
                f"ChipProfile.kind = {self.kind!r}; allowed: {', '.join(ARRAY_KINDS)}"
            )
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise StorageError(f"ChipProfile.{name} = {value!r}; must be an integer > 0")
            setattr(self, name, int(value))
        for name in DEVICE_ARRAYS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, self._checked_array(name, value))
        for name in SCALARS:
            value = getattr(self, name)
            if value is None:
                continue
            number = float(value)
            if not (math.isfinite(number) and number > 0):
                raise StorageError(f"ChipProfile.{name} = {value!r} V; must be a finite number > 0")
            setattr(self, name, number)
        if not isinstance(self.meta, dict):
            raise StorageError(f"ChipProfile.meta is {type(self.meta).__name__}; expected a dict")
        try:
            json.dumps(self.meta)
        except (TypeError, ValueError) as exc:
            raise StorageError(f"ChipProfile.meta is not JSON: {exc}") from None

    def _checked_array(self, name: str, value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype.kind not in "iuf":
            raise StorageError(f"ChipProfile.{name} has dtype {array.dtype}; expected real numbers")
        if array.shape != (self.rows, self.cols):
            raise StorageError(
                f"ChipProfile.{name} has shape {array.shape}; expected (rows, cols) = "
                f"({self.rows}, {self.cols})"
            )
        if name == "defect_class":
            if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
                raise StorageError(
                    f"ChipProfile.{name} holds non-integer values; allowed: -1, 0, 1, 2"
                )
            bad = sorted(set(np.unique(array).tolist()) - set(DEFECT_CLASSES))
            if bad:
                shown = ", ".join(str(int(b)) for b in bad)
                raise StorageError(
                    f"ChipProfile.{name} holds {shown}; allowed: 0 functional, 1 stuck-off, "
                    "2 stuck-on, -1 not measured"
                )
            return array.astype(np.int8)
        floats = array.astype(np.float64)
        if np.any(np.isinf(floats)):
            raise StorageError(
                f"ChipProfile.{name} holds infinite values; allowed: finite, or NaN where "
                "not measured"
            )
        rule = _SIGN_RULES.get(name)
        if rule is not None:
            refused, tail = rule
            measured = floats[~np.isnan(floats)]
            if np.any(refused(measured)):
                raise StorageError(f"ChipProfile.{name} holds {tail}")
        return floats

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-device arrays present, by name."""
        return {n: a for n in DEVICE_ARRAYS if (a := getattr(self, n)) is not None}

    def scalars(self) -> dict[str, float | None]:
        """The scalars (V), by name (``None`` when not measured)."""
        return {name: getattr(self, name) for name in SCALARS}

    # ------------------------------------------------------------------ .npz files

    def to_npz(self, path: str | os.PathLike[str]) -> None:
        """Write the profile to ``path`` (compressed ``.npz``: one array per quantity and
        a JSON header with chip, kind, size, scalars and meta)."""
        header = {
            **_FORMAT, "chip": self.chip, "kind": self.kind, "rows": self.rows,
            "cols": self.cols, "scalars": self.scalars(), "meta": self.meta,
        }  # fmt: skip
        contents: dict[str, Any] = {_FILE_KEY: np.array(json.dumps(header)), **self.arrays()}
        try:
            with open(path, "wb") as file:
                np.savez_compressed(file, **contents)
        except OSError as exc:
            raise StorageError(f"cannot write chip profile {os.fspath(path)}: {exc}") from None

    @classmethod
    def from_npz(cls, path: str | os.PathLike[str]) -> ChipProfile:
        """Read a profile written by :meth:`to_npz` (validated)."""
        shown = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                contents = {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read chip profile {shown}: {exc}") from None
        header_array = contents.pop(_FILE_KEY, None)
        try:
            header = json.loads(str(header_array)) if header_array is not None else {}
        except ValueError:
            header = {}
        if header.get("format") != _FORMAT["format"]:
            raise StorageError(
                f"{shown} is not an nvmlab chip profile (no {_FILE_KEY} header); write one "
                "with ChipProfile.to_npz"
            )
        missing = [key for key in ("chip", "kind", "rows", "cols") if key not in header]
        if missing:
            raise StorageError(f"chip profile {shown}: header lacks {missing}")
        return cls._from_parts(
            shown, header["chip"], header["kind"], header["rows"], header["cols"], contents,
            header.get("scalars", {}), header.get("meta") or {},
        )  # fmt: skip

    @classmethod
    def _from_parts(
        cls,
        source: str,
        chip: str,
        kind: str,
        rows: int,
        cols: int,
        arrays: dict[str, np.ndarray],
        scalars: dict[str, Any],
        meta: dict[str, Any],
        **ids: Any,
    ) -> ChipProfile:
        unknown = sorted(set(arrays) - set(DEVICE_ARRAYS))
        if unknown:
            raise StorageError(
                f"chip profile {source}: unknown arrays {unknown}; allowed: {list(DEVICE_ARRAYS)}"
            )
        extra = sorted(set(scalars) - set(SCALARS))
        if extra:
            raise StorageError(
                f"chip profile {source}: unknown scalars {extra}; allowed: {list(SCALARS)}"
            )
        fields: dict[str, Any] = {**arrays, **scalars, **ids}
        return cls(chip=chip, kind=kind, rows=rows, cols=cols, meta=meta, **fields)


def _npz_bytes(arrays: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def save_profile(db: Database, profile: ChipProfile, *, run_id: int | None = None) -> int:
    """Store ``profile`` for its chip (which must be registered with the same kind and
    size) and return the profile's id; ``run_id``: the run that produced it."""
    profile.validate()
    with db.errors(f"save the profile of chip {profile.chip!r}"), db.engine.begin() as conn:
        chip = require_chip(conn, profile.chip)
        if (chip.kind, chip.rows, chip.cols) != (profile.kind, profile.rows, profile.cols):
            raise StorageError(
                f"profile of chip {profile.chip!r} is {profile.kind} {profile.rows} x "
                f"{profile.cols}, but the chip is registered as {chip.kind} {chip.rows} x "
                f"{chip.cols}"
            )
        profile_id = conn.execute(
            insert(ChipProfileRecord)
            .values(
                chip_id=chip.id, run_id=run_id, created_at=utcnow(),
                arrays_npz=_npz_bytes(profile.arrays()), meta=profile.meta or None,
                **profile.scalars(),
            )
            .returning(ChipProfileRecord.id)
        ).scalar_one()  # fmt: skip
    profile.profile_id, profile.run_id = int(profile_id), run_id
    return int(profile_id)


def load_profile(db: Database, chip: str, *, profile_id: int | None = None) -> ChipProfile:
    """The newest stored profile of ``chip`` (or profile ``profile_id`` of it)."""
    table = ChipProfileRecord
    with db.errors(f"load the profile of chip {chip!r}"), db.read_connection() as conn:
        registered = require_chip(conn, chip)
        query = select(table.__table__).where(table.chip_id == registered.id)
        if profile_id is not None:
            query = query.where(table.id == profile_id)
        row = conn.execute(query.order_by(table.id.desc()).limit(1)).first()
    if row is None:
        if profile_id is not None:
            raise StorageError(
                f"no profile {profile_id} of chip {chip!r} in database {db.display_url}"
            )
        raise StorageError(
            f"chip {chip!r} has no stored profile; characterize it first (database "
            f"{db.display_url})"
        )
    with np.load(io.BytesIO(row.arrays_npz), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    scalars = {name: getattr(row, name) for name in SCALARS}
    return ChipProfile._from_parts(
        f"{row.id} in {db.display_url}", registered.name, registered.kind, registered.rows,
        registered.cols, arrays, scalars, row.meta or {}, profile_id=int(row.id),
        run_id=row.run_id,
    )  # fmt: skip


def list_profiles(db: Database, chip: str) -> list[dict[str, Any]]:
    """The stored profiles of ``chip``, newest first: id, run, time, scalars, array names."""
    table = ChipProfileRecord
    with db.errors(f"list the profiles of chip {chip!r}"), db.read_connection() as conn:
        registered = require_chip(conn, chip)
        rows = conn.execute(
            select(table.__table__).where(table.chip_id == registered.id).order_by(table.id.desc())
        ).all()
    out = []
    for row in rows:
        with np.load(io.BytesIO(row.arrays_npz), allow_pickle=False) as data:
            names = list(data.files)
        out.append({
            "id": int(row.id), "run_id": row.run_id, "created_at": row.created_at,
            **{name: getattr(row, name) for name in SCALARS}, "arrays": names,
        })  # fmt: skip
    return out


__all__ = [
    "DEFECT_CLASSES",
    "DEVICE_ARRAYS",
    "SCALARS",
    "ChipProfile",
    "list_profiles",
    "load_profile",
    "save_profile",
]
