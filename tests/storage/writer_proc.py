"""A measurement process writing one run, used by the concurrency and crash tests.

Run as ``python -P writer_proc.py MODE URL ...``:

``concurrent URL GO_FILE LABEL UNITS ROWS``
    waits until GO_FILE exists, then writes UNITS units of ROWS pulses and ROWS reads each
    through a background-flushing writer with small batches, and prints ``done RUN_ID``.
``crash URL UNITS ROWS``
    writes units whose pulses go out in one explicit flush of ROWS pulses (amplitude_v
    tags the unit number); prints ``run RUN_ID``, ``flushing K`` before each flush and
    ``completed K`` after each unit, and, inside the last unit, sleeps after its flush
    (a long unit) so that a SIGKILL lands mid-batch or mid-unit, never after it.
``started URL``
    starts a run, opens a writer on it (no record added, nothing flushed), prints
    ``run RUN_ID`` and sleeps (a process killed right after committing its run).
``hold URL``
    starts a run, completes unit ``done`` and opens unit ``open``, flushes, prints
    ``run RUN_ID`` and sleeps inside the open unit (a live measurement to be killed).
"""

from __future__ import annotations

import os
import sys
import time

from nvmlab.storage import RecordWriter, ensure_chip, finish_run, open_database, start_run


def concurrent(url: str, go_file: str, label: str, units: int, rows: int) -> None:
    db = open_database(url)
    chip = ensure_chip(db, "shared-chip", array_kind="memristor", n_rows=64, n_cols=64)
    run = start_run(db, "concurrency", config={"label": label}, chip_id=chip)
    print("ready", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.005)
    with RecordWriter(db, run, chip_id=chip, flush_interval_s=0.02, batch_rows=1500) as w:
        for u in range(units):
            with w.unit(f"{label}:{u}", kind="test"):
                for i in range(rows):
                    if i % 250 == 0:
                        time.sleep(0.02)  # the instrument's time per 250 records
                    w.add_pulse(i % 64, u, 1.0 + u, 1e-6, 1, "V/2", t_s=float(i))
                    w.add_read(i % 64, u, 0.2, 1e-6 * (i + 1), t_s=float(i))
    finish_run(db, run, "completed")
    print(f"done {run}", flush=True)
    db.close()


def crash(url: str, units: int, rows: int) -> None:
    db = open_database(url)
    chip = ensure_chip(db, "crash-chip", array_kind="memristor", n_rows=64, n_cols=64)
    run = start_run(db, "crash", config={"units": units}, chip_id=chip)
    print(f"run {run}", flush=True)
    with RecordWriter(db, run, chip_id=chip, background=False, batch_rows=10**9,
                      flush_interval_s=3600) as w:  # fmt: skip
        for u in range(units):
            with w.unit(f"unit:{u}", kind="test", row=u):
                w.add_records(
                    "pulses",
                    {
                        "row": [i % 64 for i in range(rows)],
                        "col": [u] * rows,
                        "t_s": [float(i) for i in range(rows)],
                        "amplitude_v": [float(u)] * rows,
                        "width_s": [1e-6] * rows,
                    },
                )
                print(f"flushing {u}", flush=True)
                w.flush()
                if u == units - 1:
                    time.sleep(60)  # the long last unit: the parent kills us in here
                w.add_read(0, u, 0.2, 1e-6)
            print(f"completed {u}", flush=True)


def started(url: str) -> None:
    db = open_database(url)
    run = start_run(db, "started")
    with RecordWriter(db, run, background=False, flush_interval_s=3600):
        print(f"run {run}", flush=True)
        time.sleep(600)


def hold(url: str) -> None:
    db = open_database(url)
    chip = ensure_chip(db, "held-chip", array_kind="memristor", n_rows=4, n_cols=4)
    run = start_run(db, "hold", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, heartbeat_interval_s=0.2) as w:
        with w.unit("done", kind="test"):
            w.add_read(0, 0, 0.2, 1e-6)
        with w.unit("open", kind="test"):
            w.add_read(1, 1, 0.2, 2e-6)
            w.flush()
            print(f"run {run}", flush=True)
            time.sleep(600)


if __name__ == "__main__":
    mode, url, *rest = sys.argv[1:]
    if mode == "concurrent":
        concurrent(url, rest[0], rest[1], int(rest[2]), int(rest[3]))
    elif mode == "crash":
        crash(url, int(rest[0]), int(rest[1]))
    elif mode == "started":
        started(url)
    elif mode == "hold":
        hold(url)
    else:
        raise SystemExit(f"unknown mode {mode!r}; allowed: concurrent, crash, started, hold")
