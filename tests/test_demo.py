"""The README's first command: a conductance map read on the emulated bench and stored."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from nvmlab import demo
from nvmlab.cli import main
from nvmlab.instruments.arrays import ArrayOperations
from nvmlab.instruments.station import Station
from nvmlab.mocks.emulated import build_emulated_bench
from nvmlab.storage.database import open_database


@pytest.mark.parametrize("smu", ["keithley2400", "keithley2636b", "keysight_b2902a"])
def test_demo_reads_every_device_and_stores_the_map(tmp_path, capsys, smu: str) -> None:
    url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    assert (
        main(["demo", "--rows", "8", "--cols", "8", "--seed", "3", "--smu", smu, "--db", url]) == 0
    )
    out = capsys.readouterr().out
    assert "status completed" in out

    db = open_database(url, create=False)
    with db.read_connection() as conn:
        runs = conn.execute(text("SELECT id, status FROM runs")).all()
        reads = conn.execute(text("SELECT row, col, conductance_s FROM reads")).all()
    db.close()
    assert [status for _, status in runs] == ["completed"]
    assert len(reads) == 64
    assert {(r, c) for r, c, _ in reads} == {(r, c) for r in range(8) for c in range(8)}
    conductances = np.array([g for *_, g in reads])
    # A memristor crossbar's working window, with a few stuck devices at the extremes.
    assert 5e-6 < np.median(conductances) < 100e-6


def test_demo_on_an_unwritable_database_fails_cleanly(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x' / 'demo.sqlite'}"
    assert main(["demo", "--rows", "4", "--cols", "4", "--db", url]) != 0
    assert "error" in capsys.readouterr().err


ROWS = COLS = 16
SEED = 3
READ_V = 0.2
DEMO_NPLC = 0.1
#: Read noise of one reading at the demo's settings (docs/devices.md): 0.2 % of G (the
#: device's) + 0.02 uS at 1 PLC (the instrument's, scaling as 1/sqrt(NPLC)).
NOISE_REL, NOISE_ABS_S = 0.002, 0.02e-6 / DEMO_NPLC**0.5


def old_inline_map() -> tuple[np.ndarray, np.ndarray, float]:
    """The demo's map read as it was written inline before the array operations: map (S),
    the chip's true conductances (S) and the instrument time of the read (s)."""
    bench = build_emulated_bench(rows=ROWS, cols=COLS, seed=SEED)
    measured = np.full((ROWS, COLS), np.nan)
    try:
        with Station(
            bench.station_dict(), visa_library=bench.visa_library(), clock=bench.clock
        ) as station:
            smu, board = station.smu, station.board
            smu.configure(current_limit_a=1e-4, nplc=DEMO_NPLC)
            smu.set_voltage(0.0)
            start = bench.clock.now()
            smu.output(True)
            for r in range(ROWS):
                for c in range(COLS):
                    board.select(r, c, unselected="track")
                    smu.set_voltage(READ_V)
                    measured[r, c] = smu.measure_current() / READ_V
                    smu.set_voltage(0.0)
            instrument_s = bench.clock.now() - start
        return measured, bench.ground_truth()["conductance_s"], instrument_s
    finally:
        bench.close()


def test_the_demo_map_read_goes_through_the_array_operations_with_the_old_figures(
    tmp_path, monkeypatch, capsys
) -> None:
    """Acceptance: the demo reads its map through ArrayOperations.read_map and its figures
    (median read error against the truth, stuck-off / stuck-on counts, instrument time) are
    those of the old inline read within sampling error."""
    calls: list[int] = []
    read_map = ArrayOperations.read_map

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return read_map(self, *args, **kwargs)

    reported: dict[str, object] = {}

    def report(measured, truth_s, run, instrument_s, wall_s) -> None:  # type: ignore[no-untyped-def]
        reported.update(measured=measured, truth=truth_s, instrument_s=instrument_s)

    monkeypatch.setattr(ArrayOperations, "read_map", counting)
    monkeypatch.setattr(demo, "_report", report)
    url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    args = ["demo", "--rows", str(ROWS), "--cols", str(COLS), "--seed", str(SEED), "--db", url]
    assert main(args) == 0
    assert len(calls) == ROWS  # one read_map per stored row

    new_map, truth = reported["measured"], reported["truth"]
    old_map, old_truth, old_instrument_s = old_inline_map()
    assert np.array_equal(truth, old_truth)  # the same chip (same seed)

    # Every device of both maps within 5 sigma of the truth (plus its telegraph amplitude).
    # (The ground truth of the demo's bench is read after the map, relaxation included.)
    # Devices whose current would pass the 100 uA compliance read clamped, in both maps.
    sigma = NOISE_REL * truth + NOISE_ABS_S
    below = truth * READ_V < 0.9e-4
    for measured in (new_map, old_map):
        error = np.abs(measured - truth)[below]
        assert np.all(error <= 5 * sigma[below] + 0.02 * truth[below])

    new, old = demo.map_figures(new_map, truth), demo.map_figures(old_map, truth)
    assert (new.stuck_off, new.stuck_on, new.functional) == (
        old.stuck_off,
        old.stuck_on,
        old.functional,
    )
    # The median of |error| / G over n devices has a standard error of about
    # 0.79 sigma_rel / sqrt(n) (half-normal errors); two independent maps differ by
    # sqrt(2) times that. Accept 5 of those.
    functional = (truth > 2e-6) & (truth < 250e-6)
    sigma_rel = float(np.median(sigma[functional] / truth[functional]))
    tolerance = 5 * np.sqrt(2) * 0.79 * sigma_rel / np.sqrt(new.functional)
    assert abs(new.median_abs_error_rel - old.median_abs_error_rel) <= tolerance
    # The same commands per device: the same instrument time (up to a few set-up commands).
    assert reported["instrument_s"] == pytest.approx(old_instrument_s, rel=0.02)


def test_stop_requests_raise_before_the_database_then_only_at_safe_points() -> None:
    stop = demo.StopRequests()
    with pytest.raises(KeyboardInterrupt):
        stop._handle(2, None)  # before defer(): at once
    stop._handle(2, None)  # a second one within the grace: ignored

    stop = demo.StopRequests()
    stop.defer()
    stop._handle(2, None)  # deferred: recorded only
    assert stop.requested
    stop._handle(2, None)  # the second Ctrl-C while stopping: ignored
    with pytest.raises(KeyboardInterrupt):
        stop.check()  # the map stops at its next safe point
    assert stop.first_at is not None
    stop.first_at -= demo.GRACE_S + 1  # the stop has taken longer than the grace
    with pytest.raises(KeyboardInterrupt):
        stop._handle(2, None)
