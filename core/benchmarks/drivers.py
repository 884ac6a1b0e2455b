"""Driver-stack benchmarks, printed (not asserted): ``python -m nvmlab.benchmarks.drivers``.

1. Per-query overhead: the same ``*IDN?`` through raw pyvisa-py and through the driver
   stack (driver descriptor -> Transport -> pyvisa-py), over loopback TCP against the
   served emulator.
2. A 1000-point I-V through one list sweep against the same through per-point
   set-and-measure queries, for each SMU model, as a wall-time ratio (and the instrument
   time the bench clock charged for each, with the configured per-message latency).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.models import get_model, models_of_kind, spelled

if TYPE_CHECKING:
    from nvmlab.mocks.physics.resistor import ResistorArray

__all__ = ["main", "query_overhead", "iv_bulk_vs_per_point"]

MODELS = models_of_kind("smu")


def _resistors() -> ResistorArray:
    """An 8 x 8 crossbar of 50 uS resistors (a known answer: I = 50e-6 * V)."""
    from nvmlab.mocks.physics.resistor import ResistorArray

    return ResistorArray(np.full((8, 8), 50e-6))


def query_overhead(queries: int = 300, model: str = "keithley2400") -> dict[str, float]:
    """Mean wall time (us) per ``*IDN?``: raw pyvisa vs the driver stack, same TCP server."""
    import pyvisa

    from nvmlab.drivers.transport import open_transport
    from nvmlab.mocks.emulated import build_emulated_bench

    driver_cls = get_model(model).load_driver()
    bench = build_emulated_bench(smu_model=model, rows=8, cols=8, array=_resistors())
    try:
        with bench.serve_tcp() as tcp:
            resource = tcp.resources["smu"]
            rm = pyvisa.ResourceManager("@py")
            raw: Any = rm.open_resource(resource, read_termination="\n", write_termination="\n")
            raw.timeout = 5000
            transport = open_transport(resource, name="smu", timeout_s=5.0)
            driver = driver_cls(transport)
            calls: dict[str, Callable[[], object]] = {
                "raw": lambda: raw.query("*IDN?"),
                "transport": lambda: transport.query("*IDN?"),
                "driver": lambda: driver.identity,
            }
            # Interleaved, one call each per round; the median resists scheduler noise.
            samples: dict[str, list[float]] = {key: [] for key in calls}
            for fn in calls.values():
                fn()
            for _ in range(queries):
                for key, fn in calls.items():
                    start = time.perf_counter()
                    fn()
                    samples[key].append(time.perf_counter() - start)
            raw_us, transport_us, driver_us = (
                float(np.median(samples[key])) * 1e6 for key in ("raw", "transport", "driver")
            )
            raw.close()
            rm.close()
            transport.close()
    finally:
        bench.close()
    return {"raw_pyvisa_us": raw_us, "transport_us": transport_us, "driver_us": driver_us}


def iv_bulk_vs_per_point(
    model: str, points: int = 1000, query_latency_s: float = 0.0
) -> dict[str, float]:
    """Wall and instrument time (s) of an I-V by one list sweep and by per-point queries."""
    from nvmlab.drivers.transport import open_transport
    from nvmlab.instruments.safety import SafetyLimits
    from nvmlab.instruments.sourcemeters import make_source_meter
    from nvmlab.mocks.benchfile import BenchConfig
    from nvmlab.mocks.emulated import build_emulated_bench

    config = BenchConfig().with_overrides(smu_model=model, rows=8, cols=8)
    config.smu.query_latency_s = query_latency_s
    bench = build_emulated_bench(config, array=_resistors())
    volts = np.linspace(-0.2, 0.2, points)
    driver_name = get_model(model).name
    driver_cls = get_model(driver_name).load_driver()
    try:
        bench.preselect(2, 3)
        with bench.serve_tcp() as tcp:
            transport = open_transport(tcp.resources["smu"], name="smu", timeout_s=30.0)
            smu = make_source_meter(driver_name, driver_cls(transport), SafetyLimits())
            smu.configure(current_limit_a=1e-3, nplc=0.01)

            t0, c0 = time.perf_counter(), bench.instrument_time_s()
            bulk = smu.list_sweep(volts)
            bulk_wall, bulk_inst = time.perf_counter() - t0, bench.instrument_time_s() - c0

            smu.output(True)
            t0, c0 = time.perf_counter(), bench.instrument_time_s()
            loop = np.empty(points)
            for k, v in enumerate(volts):
                smu.set_voltage(float(v))
                loop[k] = smu.measure_current()
            loop_wall, loop_inst = time.perf_counter() - t0, bench.instrument_time_s() - c0
            smu.safe_state()
            transport.close()
    finally:
        bench.close()
    agree = float(np.max(np.abs(bulk - loop)) / max(float(np.max(np.abs(bulk))), 1e-30))
    return {
        "bulk_wall_s": bulk_wall,
        "loop_wall_s": loop_wall,
        "bulk_instrument_s": bulk_inst,
        "loop_instrument_s": loop_inst,
        "max_relative_difference": agree,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nvmlab bench drivers", description="Driver-stack benchmarks (printed)."
    )
    parser.add_argument("--queries", type=int, default=300, help="queries per overhead figure")
    parser.add_argument("--points", type=int, default=1000, help="I-V points")
    parser.add_argument(
        "--query-latency-s",
        type=float,
        default=0.0,
        help="emulated per-message instrument latency (s) charged to the bench clock",
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    models = [spelled(m) for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; allowed {list(MODELS)}")

    print("Per-query overhead, *IDN? over loopback TCP (pyvisa-py), median of", args.queries)
    for model in models:
        r = query_overhead(args.queries, model)
        print(
            f"  {model:16s} raw pyvisa {r['raw_pyvisa_us']:8.1f} us   transport "
            f"{r['transport_us']:8.1f} us   driver {r['driver_us']:8.1f} us   "
            f"overhead {r['driver_us'] - r['raw_pyvisa_us']:+7.1f} us/query"
        )
    print(
        f"\n{args.points}-point I-V over loopback TCP: one list sweep vs per-point queries"
        f" (emulated latency {args.query_latency_s:g} s/message)"
    )
    for model in models:
        r = iv_bulk_vs_per_point(model, args.points, args.query_latency_s)
        print(
            f"  {model:16s} list sweep {r['bulk_wall_s'] * 1e3:8.1f} ms   per-point "
            f"{r['loop_wall_s'] * 1e3:9.1f} ms   ratio {r['loop_wall_s'] / r['bulk_wall_s']:6.1f}x"
            f"   instrument time {r['bulk_instrument_s']:.3f} s vs {r['loop_instrument_s']:.3f} s"
            f"   max |diff| {r['max_relative_difference']:.1e}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
