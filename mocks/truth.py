"""Ground truth of a chip from its state file, for a bench served in another process.

Tests and benchmarks of the measurement layers judge their results against the chip's
true values. A bench served by ``nvmlab emulate --state-file FILE`` keeps its chip in
that file (saved after every write, every few seconds of reads and when it stops), so
:func:`read_ground_truth` needs nothing but the file::

    from nvmlab.mocks import read_ground_truth
    truth = read_ground_truth("chip.npz")
    truth["conductance_s"][3, 5], truth["pulse_count"].sum(), truth["clock_s"]

and ``nvmlab truth FILE --out truth.npz`` writes the same values to a NumPy archive.
Every value is in the form a measurement extracts it; the definitions (conductance read
at 0.2 V, the 1 ms / 2 % switching threshold, the read-noise split) are in
``docs/devices.md``, the keys in the ``ground_truth`` docstrings of
:class:`~nvmlab.mocks.physics.memristor.MemristorArray` and
:class:`~nvmlab.mocks.physics.eflash.EflashArray`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nvmlab.errors import ConfigError
from nvmlab.mocks.physics import ARRAY_KINDS, create_array
from nvmlab.mocks.physics.state import read_state_meta


def read_ground_truth(state_file: str | os.PathLike[str]) -> dict[str, np.ndarray | float]:
    """Every true per-device value of the chip saved in ``state_file``.

    Returns the chip's ``ground_truth()`` arrays (rows x cols) plus ``clock_s``: the
    bench clock's time (s) at which the file was written (NaN for files written without
    it, by older versions or by a bench that did not pass it). State files written
    before pulses were counted load with ``pulse_count`` 0. Raises ConfigError naming
    the file when it is missing or not a chip state file.
    """
    path = Path(state_file)
    if not path.is_file():
        raise ConfigError(
            "no chip state file here; pass the file given to 'nvmlab emulate --state-file' "
            "(or the bench file's state_file)",
            file=str(path),
        )
    meta = read_state_meta(path)
    kind, rows, cols = meta["kind"], meta["rows"], meta["cols"]
    if kind not in ARRAY_KINDS:
        raise ConfigError(
            f"state file holds an array of kind {kind!r}; allowed: {', '.join(ARRAY_KINDS)}",
            file=str(path),
        )
    try:
        array = create_array(kind, int(rows), int(cols), seed=int(meta.get("seed", 0)))
    except ConfigError as exc:
        raise ConfigError(f"state file's geometry is not allowed: {exc}", file=str(path)) from None
    array.load_state(path)
    truth: dict[str, np.ndarray | float] = dict(array.ground_truth())
    clock_s = meta.get("clock_s")
    truth["clock_s"] = math.nan if clock_s is None else float(clock_s)
    return truth


def write_truth_npz(truth: dict[str, np.ndarray | float], out: Path) -> None:
    """Write ``truth`` to the NumPy archive ``out`` (one array per key; floats as 0-d
    arrays), atomically: a temporary file in the same folder renamed over ``out``."""
    directory = out.parent if str(out.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            arrays: dict[str, Any] = {k: np.asarray(v) for k, v in truth.items()}
            np.savez(fh, **arrays)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _summary(truth: dict[str, np.ndarray | float]) -> str:
    lines = []
    for key, value in truth.items():
        arr = np.asarray(value)
        if arr.ndim == 0:
            lines.append(f"{key} = {float(arr):g}")
        elif arr.dtype == bool:
            lines.append(f"{key}: {int(arr.sum())} of {arr.size} true")
        else:
            lines.append(
                f"{key}: {arr.shape[0]} x {arr.shape[1]}, min {arr.min():.4g}, "
                f"median {np.median(arr):.4g}, max {arr.max():.4g}"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    truth = read_ground_truth(args.state_file)
    if args.out is None:
        print(_summary(truth))
        return 0
    try:
        write_truth_npz(truth, args.out)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {str(args.out)!r}: {exc.strerror or exc}; allowed: a file in an "
            "existing, writable folder",
            field="--out",
        ) from None
    print(f"wrote {len(truth)} true values of {args.state_file} to {args.out}", file=sys.stderr)
    return 0


DESCRIPTION = """\
Read the ground truth of the chip saved in STATE_FILE (the --state-file of
'nvmlab emulate', saved after every write, every few seconds of reads and on stop): every
true per-device value in the form a measurement extracts it (conductance read at 0.2 V,
thresholds, temperature coefficients, I-V nonlinearity, read noise at 1 PLC and its parts,
telegraph noise, relaxation, forming voltage, defect class, eFlash cell parameters, pulse
counts) and clock_s, the bench clock's time when the file was written. Definitions:
docs/devices.md.

With --out, writes them to a NumPy archive (np.load(OUT)[key]); without, prints a summary.
Exit status 0 on success, 1 when the file cannot be read or OUT cannot be written.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "truth",
        help="the chip's ground truth from an emulator state file",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("state_file", metavar="STATE_FILE", type=Path, help="chip state file")
    parser.add_argument(
        "--out", type=Path, metavar="OUT", help="write the values to this .npz archive"
    )
    parser.set_defaults(handler=run)


__all__ = ["read_ground_truth", "register", "write_truth_npz"]
