"""Opening a station: identification, roles, and what happens when an instrument is missing."""

from __future__ import annotations

import pytest

from nvmlab.errors import ConfigError
from nvmlab.instruments.roles import ArrayBoard, Chamber, SourceMeter
from nvmlab.instruments.station import Station, StationError


def test_an_emulated_station_identifies_every_instrument(emulated_station) -> None:  # type: ignore[no-untyped-def]
    assert emulated_station.identities["smu"].startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2400")
    assert emulated_station.identities["chamber"].startswith("ESPEC")
    assert emulated_station.identities["board"].startswith("NVMLAB,PROBE-BOARD")
    assert isinstance(emulated_station.smu, SourceMeter)
    assert isinstance(emulated_station.chamber, Chamber)
    assert isinstance(emulated_station.board, ArrayBoard)


@pytest.mark.nvmlab_bench(smu="keithley2636b", chamber="watlow_f4", rows=8, cols=8, seed=3)
def test_the_same_station_code_runs_on_other_models(emulated_station, emulated_bench) -> None:  # type: ignore[no-untyped-def]
    assert "2636B" in emulated_station.identities["smu"]
    assert emulated_station.identities["chamber"].startswith("Watlow F4 model 5270")
    emulated_station.board.select(1, 1, unselected="track")
    emulated_station.smu.configure(current_limit_a=1e-4, nplc=0.1)
    emulated_station.smu.set_voltage(0.2)
    emulated_station.smu.output(True)
    assert emulated_station.smu.measure_current() > 0
    assert emulated_bench.bench.terminal_v["A"] == pytest.approx(0.2)


def test_a_station_reached_through_pyserial_urls(emulated_bench) -> None:  # type: ignore[no-untyped-def]
    urls = emulated_bench.serial_urls()
    data = emulated_bench.station_dict({"chamber": urls["chamber"], "board": urls["board"]})
    with Station(data, clock=emulated_bench.clock) as station:
        assert station.config.instruments["board"].resource.startswith("nvmlab://")
        assert station.board.rows == 8
        with pytest.raises(
            ConfigError, match=r"this station has no smu; add an \[instruments.smu\] section"
        ):
            _ = station.smu


def test_an_unreachable_instrument_fails_the_open_naming_it(emulated_bench) -> None:  # type: ignore[no-untyped-def]
    data = emulated_bench.station_dict()
    data["instruments"]["board"]["resource"] = "nvmlab://no-such-bench/board"
    data["instruments"]["board"]["timeout_s"] = 0.5
    station = Station(data, visa_library=emulated_bench.visa_library(), clock=emulated_bench.clock)
    with pytest.raises(
        StationError, match=r"could not open: board \(probe board at nvmlab://no-such-bench/board\)"
    ):
        station.open()
    assert not station.is_open
    statuses = {s.role: s for s in station.check()}
    assert statuses["smu"].ok and statuses["chamber"].ok
    assert not statuses["board"].ok and "no-such-bench" in statuses["board"].status
    station.close(safe=False)


def test_roles_are_not_available_before_open(emulated_bench) -> None:  # type: ignore[no-untyped-def]
    station = Station(emulated_bench.station_dict(), visa_library=emulated_bench.visa_library())
    with pytest.raises(StationError, match="not open"):
        _ = station.chamber
