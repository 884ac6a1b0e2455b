"""The station file an emulated bench writes reaches every instrument as configured."""

from __future__ import annotations

from nvmlab.instruments.station import Station, StationConfig
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.emulated import build_emulated_bench


def test_a_watlow_at_a_non_default_modbus_address_is_reachable_from_the_station_file() -> None:
    config = BenchConfig.from_dict(
        {"bench": {"rows": 4, "cols": 4}, "chamber": {"model": "watlow_f4", "address": 7}}
    )
    emulated = build_emulated_bench(config)
    try:
        station_dict = emulated.station_dict()
        assert station_dict["instruments"]["chamber"]["options"] == {"address": 7}
        StationConfig.from_dict(station_dict)  # validates
        with Station(
            station_dict, visa_library=emulated.visa_library(), clock=emulated.clock
        ) as station:
            station.chamber.set_setpoint(30.0)
            assert station.chamber.setpoint() == 30.0
    finally:
        emulated.close()
