"""Emulated-bench benchmarks: figures printed, never asserted (``nvmlab bench --only mocks``).

1. Full array read (64 x 64 by default), every device, through the in-process stack
   (pyvisa + the in-process VISA library): board ``SEL r,c`` then one SMU read per device,
   for each SMU model; wall time, devices/s, and the instrument time it would take.
2. One device read N times: per-point queries against the loop on the instrument (2400
   list sweep, 2636B TSP script into a buffer, B2902A list sweep with ``:FETC:ARR?``).
3. Single query round trip: in-process (VISA library, ``nvmlab://`` serial port) and over
   loopback TCP (pyvisa-py raw socket, pyserial ``socket://``), plus a set-then-query loop
   over TCP (the Nagle / delayed-ACK check).
4. The served bench against a trivial socket server: ``nvmlab emulate`` (8 x 8, Keithley
   2400) in a child process at time scales 1 and 1e6, and a server that answers every line
   with a fixed reply in another, queried in turn by the same pyvisa-py client: median wall
   cost of ``*IDN?`` and ``:READ?`` (0.01 PLC, no source delay), the instrument time a
   read stands for, and the ratio of each cost beyond that time to the trivial server's.
5. Emulator work per read in a list sweep: the wall time of a 1000-point 2400 list sweep
   divided by its points, in-process (virtual clock) and served (time scale 1e6), less
   the instrument time the points stand for.
6. Virtual instrument time against wall time for the whole run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.mocks.physics import solver_benchmark
from nvmlab.mocks.serving import speed

READ_V = 0.2
SMU_MODELS = ("keithley2400", "keithley2636b", "keysight_b2902a")

#: Per model: commands to source READ_V on channel A at 0.01 NPLC, and the single-read query.
SMU_SETUP: dict[str, tuple[list[str], str]] = {
    "keithley2400": (
        [
            ":SOUR:FUNC VOLT;:SOUR:VOLT 0.2;:SENS:FUNC 'CURR';:SENS:CURR:PROT 1e-3",
            ":SENS:CURR:NPLC 0.01;:FORM:ELEM CURR;:OUTP ON",
        ],
        ":READ?",
    ),
    "keithley2636b": (
        [
            "smua.source.func = smua.OUTPUT_DCVOLTS smua.source.levelv = 0.2",
            "smua.source.limiti = 1e-3 smua.measure.nplc = 0.01 smua.source.output = smua.OUTPUT_ON",
        ],
        "print(smua.measure.i())",
    ),
    "keysight_b2902a": (
        [
            ":SOUR1:FUNC:MODE VOLT;:SOUR1:VOLT 0.2;:SENS1:CURR:PROT 1e-3",
            ":SENS1:CURR:NPLC 0.01;:OUTP1 ON",
        ],
        ":MEAS:CURR? (@1)",
    ),
}


def _open(emulated: EmulatedBench, role: str, term: str = "\n") -> Any:
    rm = emulated.resource_manager()
    return rm.open_resource(
        emulated.resources()[role], read_termination=term, write_termination=term, timeout=10000
    )


def _setup_smu(emulated: EmulatedBench, model: str) -> tuple[Any, str]:
    smu = _open(emulated, "smu")
    commands, query = SMU_SETUP[model]
    for command in commands:
        smu.write(command)
    return smu, query


def full_array_read(model: str, rows: int, cols: int, seed: int) -> dict[str, float]:
    """Every device read once through board selection + one SMU query (in-process)."""
    emulated = build_emulated_bench(rows=rows, cols=cols, seed=seed, smu_model=model)
    board = _open(emulated, "board")
    board.query("READ:SCHEME TRACK")
    smu, query = _setup_smu(emulated, model)
    currents = np.empty((rows, cols))
    t_virtual = emulated.clock.now()
    t_wall = time.perf_counter()
    for r in range(rows):
        for c in range(cols):
            board.query(f"SEL {r},{c}")
            currents[r, c] = float(smu.query(query).split(",")[0])
    wall = time.perf_counter() - t_wall
    virtual = emulated.clock.now() - t_virtual
    truth = READ_V * emulated.ground_truth()["conductance_s"]
    rel_err = np.abs(currents - truth) / np.abs(truth)
    emulated.resource_manager().close()
    emulated.close()
    return {
        "wall_s": wall,
        "virtual_s": virtual,
        "devices": float(rows * cols),
        "median_rel_err": float(np.median(rel_err)),
    }


def _timed(fn: Callable[[], Any], emulated: EmulatedBench) -> tuple[float, float]:
    t_virtual, t_wall = emulated.clock.now(), time.perf_counter()
    fn()
    return time.perf_counter() - t_wall, emulated.clock.now() - t_virtual


def on_instrument_loops(
    points: int, query_latency_s: float
) -> list[tuple[str, str, int, float, float]]:
    """(model, method, points, wall s, instrument s) for per-point queries vs loops; every
    message costs ``query_latency_s`` (s) of instrument time (the bus round trip)."""
    from nvmlab.mocks.benchfile import BenchConfig, SmuConfig

    results: list[tuple[str, str, int, float, float]] = []
    for model in SMU_MODELS:
        config = BenchConfig(
            rows=16, cols=16, smu=SmuConfig(model, query_latency_s=query_latency_s)
        )
        emulated = build_emulated_bench(config)
        emulated.preselect(3, 4)
        smu, query = _setup_smu(emulated, model)

        def per_point(smu: Any = smu, query: str = query) -> None:
            for _ in range(points):
                smu.query(query)

        wall, virtual = _timed(per_point, emulated)
        results.append((model, "per-point queries", points, wall, virtual))
        levels = ",".join(["0.2"] * points)
        if model == "keithley2400":

            def looped(smu: Any = smu, levels: str = levels) -> None:
                smu.write(f":SOUR:VOLT:MODE LIST;:SOUR:LIST:VOLT {levels};:TRIG:COUN {points}")
                values = smu.query(":READ?").split(",")
                assert len(values) == points, f"list sweep returned {len(values)} values"

            method = "list sweep, one :READ?"
        elif model == "keithley2636b":
            smu.write(
                "loadscript benchloop\n"
                "smua.nvbuffer1.clear()\n"
                "smua.nvbuffer1.appendmode = 1\n"
                f"for i = 1, {points} do\n"
                "  smua.measure.i(smua.nvbuffer1)\n"
                "end\n"
                "endscript"
            )

            def looped(smu: Any = smu, levels: str = levels) -> None:
                smu.write("benchloop()")
                values = smu.query(f"printbuffer(1, {points}, smua.nvbuffer1.readings)").split(",")
                assert len(values) == points, f"TSP buffer returned {len(values)} values"

            method = "TSP script loop + printbuffer"
        else:

            def looped(smu: Any = smu, levels: str = levels) -> None:
                smu.write(f":SOUR1:VOLT:MODE LIST;:SOUR1:LIST:VOLT {levels};:TRIG1:COUN {points}")
                smu.write(":INIT (@1)")
                values = smu.query(":FETC:ARR:CURR? (@1)").split(",")
                assert len(values) == points, f"list sweep returned {len(values)} values"

            method = "list sweep, :INIT + :FETC:ARR?"
        try:
            wall, virtual = _timed(looped, emulated)
            results.append((model, method, points, wall, virtual))
        except Exception as exc:  # a figure missing is reported, never fatal
            results.append((model, f"{method} (failed: {exc})", points, float("nan"), float("nan")))
        emulated.resource_manager().close()
        emulated.close()
    return results


def _median_round_trip(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def round_trips(n: int) -> list[tuple[str, float]]:
    """Median wall time of one query round trip (s) on each path."""
    import pyvisa
    import serial

    out: list[tuple[str, float]] = []
    emulated = build_emulated_bench(rows=16, cols=16, seed=0)
    smu = _open(emulated, "smu")
    out.append(
        ("in-process VISA library, *IDN? (2400)", _median_round_trip(lambda: smu.query("*IDN?"), n))
    )
    port = serial.serial_for_url(emulated.serial_urls()["board"], timeout=1.0)

    def serial_idn(port: Any = port) -> None:
        port.write(b"*IDN?\n")
        port.readline()

    out.append(
        ("in-process nvmlab:// serial port, *IDN? (board)", _median_round_trip(serial_idn, n))
    )
    port.close()
    emulated.resource_manager().close()
    with emulated.serve_tcp() as tcp:
        rm = pyvisa.ResourceManager("@py")
        tsmu: Any = rm.open_resource(
            tcp.resources["smu"], read_termination="\n", write_termination="\n"
        )
        out.append(
            (
                "loopback TCP, pyvisa-py raw socket, *IDN? (2400)",
                _median_round_trip(lambda: tsmu.query("*IDN?"), n),
            )
        )

        def set_then_query(tsmu: Any = tsmu) -> None:
            tsmu.write(":SOUR:VOLT 0.1")
            tsmu.query(":SOUR:VOLT?")

        out.append(
            (
                "loopback TCP, write then query (no 40 ms stall expected)",
                _median_round_trip(set_then_query, n),
            )
        )
        tsmu.close()
        rm.close()
        tport = serial.serial_for_url(tcp.serial_urls["board"], timeout=2.0)

        def tcp_serial_idn(tport: Any = tport) -> None:
            tport.write(b"*IDN?\n")
            tport.readline()

        out.append(
            (
                "loopback TCP, pyserial socket://, *IDN? (board)",
                _median_round_trip(tcp_serial_idn, n),
            )
        )
        tport.close()
    emulated.close()
    return out


def print_served_query_costs(queries: int, time_scales: Sequence[float]) -> None:
    """Section 4: the served bench's cost per query beside the trivial server's."""
    print(
        f"\nServed bench against a trivial socket server (nvmlab emulate, {speed.ROWS} x "
        f"{speed.COLS}, Keithley 2400, child process; median of {queries} queries each, "
        "taken in turn with the trivial server's):"
    )
    for scale in time_scales:
        c = speed.served_query_costs(queries, scale)
        print(f"  time scale {scale:g}: trivial server {1e6 * c.trivial_s:8.1f} us per query")
        print(
            f"    *IDN?                        {1e6 * c.idn_s:8.1f} us   "
            f"{c.ratio(c.idn_s):6.2f} x trivial"
        )
        print(
            f"    :READ? ({speed.READ_NPLC:g} PLC)            {1e6 * c.read_s:8.1f} us   "
            f"{c.ratio(c.read_s):6.2f} x trivial  (instrument time "
            f"{1e6 * c.read_instrument_s:.4g} us; beyond it {1e6 * c.read_overhead_s:.1f} us = "
            f"{c.ratio(c.read_overhead_s):.2f} x trivial)"
        )


def print_list_sweep_costs(points: int) -> None:
    """Section 5: the emulator's work per read in a list sweep."""
    print(f"\nEmulator work per read in a {points}-point 2400 list sweep (wall time / points):")
    for r in speed.list_sweep_costs(points):
        waited = (
            f"(instrument time {1e6 * r.instrument_per_point_s:.4g} us; beyond it "
            f"{1e6 * r.work_per_point_s:.1f} us)"
            if r.instrument_per_point_s > 0
            else "(no instrument time waited)"
        )
        print(f"  {r.path:32s} {1e6 * r.wall_per_point_s:8.1f} us per point  {waited}")


def _time_scales(text: str) -> list[float]:
    try:
        scales = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers") from None
    if not all(0 < x <= 1e6 for x in scales):
        raise argparse.ArgumentTypeError(f"{text!r}: time scales are in (0, 1e6]")
    return scales


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nvmlab-mocks-bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=64, help="array rows (default 64)")
    parser.add_argument("--cols", type=int, default=64, help="array columns (default 64)")
    parser.add_argument("--points", type=int, default=100, help="points per loop benchmark")
    parser.add_argument(
        "--round-trips", type=int, default=200, help="queries per round-trip figure"
    )
    parser.add_argument(
        "--query-latency-s",
        type=float,
        default=0.001,
        help="bus round trip charged per message in the loop benchmark (s, default 0.001: LAN)",
    )
    parser.add_argument(
        "--models", default=",".join(SMU_MODELS), help="SMU models for the array read"
    )
    parser.add_argument(
        "--served-queries",
        type=int,
        default=300,
        help="queries per served-bench figure, each beside one to the trivial server",
    )
    parser.add_argument(
        "--time-scales",
        type=_time_scales,
        default=[1.0, 1e6],
        help="time scales of the served bench, comma-separated (default 1,1e6)",
    )
    parser.add_argument(
        "--sweep-points", type=int, default=1000, help="points of the timed list sweep"
    )
    args = parser.parse_args(list(argv) if argv is not None else [])
    wall0 = time.perf_counter()
    virtual_total = 0.0

    print(
        f"Full {args.rows} x {args.cols} array read, in-process (board SEL + one SMU read per device, 0.01 NPLC):"
    )
    for model in args.models.split(","):
        r = full_array_read(model, args.rows, args.cols, seed=0)
        virtual_total += r["virtual_s"]
        print(
            f"  {model:16s} wall {r['wall_s']:7.2f} s  {r['devices'] / r['wall_s']:8.0f} devices/s  "
            f"instrument time {r['virtual_s']:7.2f} s ({1e3 * r['virtual_s'] / r['devices']:.2f} ms/device)  "
            f"median |I - I_true|/I_true {100 * r['median_rel_err']:.2f} %"
        )

    print(
        f"\nOne device read {args.points} times: per-point queries vs the loop on the instrument "
        f"({1e3 * args.query_latency_s:g} ms bus latency per message):"
    )
    for model, method, n, wall, virtual in on_instrument_loops(args.points, args.query_latency_s):
        virtual_total += 0.0 if np.isnan(virtual) else virtual
        rate = n / wall if wall == wall and wall > 0 else float("nan")
        print(
            f"  {model:16s} {method:34s} {rate:9.0f} points/s wall  "
            f"{1e3 * virtual / n:7.3f} ms/point instrument time"
        )

    print("\nSingle query round trip (median wall time):")
    for label, seconds in round_trips(args.round_trips):
        print(f"  {label:58s} {1e6 * seconds:9.1f} us")

    print_served_query_costs(args.served_queries, args.time_scales)
    print_list_sweep_costs(args.sweep_points)

    print()
    solver_benchmark.main(["--size", str(args.rows)])

    wall_total = time.perf_counter() - wall0
    print(
        f"\nVirtual instrument time vs wall time (array reads and loops): {virtual_total:.2f} s of "
        f"instrument time in {wall_total:.2f} s of wall time"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
