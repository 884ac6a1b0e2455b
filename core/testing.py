"""pytest fixtures that give an emulated bench and station, in-process (entry point ``nvmlab``).

Installed with nvmlab and loaded by pytest automatically, so a lab can test its own scripts
against the emulated bench the way nvmlab tests itself::

    import pytest

    @pytest.mark.nvmlab_bench(smu="keithley2636b", rows=8, cols=8, seed=3)
    def test_my_forming_script(emulated_station, emulated_bench):
        my_forming_script(emulated_station)                 # speaks to the roles
        assert emulated_bench.bench.max_applied_v["A"] <= 3.0   # what really happened

Fixtures:

``emulated_bench``
    An :class:`~nvmlab.mocks.emulated.EmulatedBench` on a virtual clock (instrument time
    costs no wall time): an 8 x 8 memristor crossbar, a Keithley 2400, an Espec chamber and
    the probe board by default. Options come from the ``nvmlab_bench`` marker, or from the
    ``nvmlab_bench_options`` fixture (override it, or parametrize it indirectly), marker
    values winning. Keys: ``rows``, ``cols``, ``seed``, ``array`` (``"memristor"``,
    ``"eflash"``, ``"resistor"``), ``smu`` (``"keithley2400"``, ``"keithley2636b"``,
    ``"keysight_b2902a"``), ``chamber`` (``"espec"``, ``"watlow_f4"``), ``config`` (a
    :class:`~nvmlab.mocks.benchfile.BenchConfig`, e.g. with faults).
``emulated_station``
    A :class:`~nvmlab.instruments.station.Station` opened on that bench through the
    in-process VISA library, closed with the safe state after the test.

Imports of nvmlab's heavier modules happen inside the fixtures, not when pytest starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from nvmlab.instruments.station import Station
    from nvmlab.mocks.emulated import EmulatedBench

MARKER = "nvmlab_bench"
DEFAULT_BENCH: dict[str, Any] = {"rows": 8, "cols": 8, "seed": 0}
_BENCH_KEYS = ("rows", "cols", "seed", "array", "smu", "chamber", "config", "state_file")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(rows=8, cols=8, seed=0, array='memristor', smu='keithley2400', "
        "chamber='espec', config=None): options of the emulated_bench / emulated_station "
        "fixtures (nvmlab's in-process emulated bench)",
    )


def bench_options(request: pytest.FixtureRequest, base: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then ``base`` (the options fixture), then the closest ``nvmlab_bench`` marker."""
    options = {**DEFAULT_BENCH, **base}
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        if marker.args:
            raise pytest.UsageError(
                f"@pytest.mark.{MARKER} takes keyword arguments only, got {marker.args!r}"
            )
        options.update(marker.kwargs)
    unknown = sorted(set(options) - set(_BENCH_KEYS))
    if unknown:
        raise pytest.UsageError(
            f"unknown {MARKER} option(s) {', '.join(unknown)}; allowed: {', '.join(_BENCH_KEYS)}"
        )
    return options


@pytest.fixture
def nvmlab_bench_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Options of :func:`emulated_bench`; parametrize indirectly or override in a conftest."""
    return dict(getattr(request, "param", {}) or {})


@pytest.fixture
def emulated_bench(
    request: pytest.FixtureRequest, nvmlab_bench_options: dict[str, Any]
) -> Iterator[EmulatedBench]:
    """An in-process emulated bench on a virtual clock (see the module documentation)."""
    from nvmlab.clock import VirtualClock
    from nvmlab.mocks.benchfile import BenchConfig
    from nvmlab.mocks.emulated import build_emulated_bench

    options = bench_options(request, nvmlab_bench_options)
    config = options.pop("config", None)
    overrides: dict[str, Any] = {}
    for key, value in options.items():
        if key == "smu":
            overrides["smu_model"] = value
        elif key == "chamber":
            overrides["chamber_model"] = value
        else:
            overrides[key] = value
    # Overrides go through the config (build_emulated_bench's own ``array`` argument is a
    # ready-made chip, not the array kind).
    config = (config if config is not None else BenchConfig()).with_overrides(**overrides)
    bench = build_emulated_bench(config, clock=VirtualClock())
    try:
        yield bench
    finally:
        bench.close()


@pytest.fixture
def emulated_station(emulated_bench: EmulatedBench) -> Iterator[Station]:
    """A station opened on :func:`emulated_bench`, left in the safe state afterwards."""
    from nvmlab.instruments.station import Station

    station = Station(
        emulated_bench.station_dict(),
        visa_library=emulated_bench.visa_library(),
        clock=emulated_bench.clock,
    )
    with station:
        yield station
