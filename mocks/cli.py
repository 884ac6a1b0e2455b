"""``nvmlab emulate``: serve one emulated bench on loopback TCP for any client software."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvmlab.clock import ScaledClock
from nvmlab.errors import ConfigError
from nvmlab.mocks.benchfile import (
    ARRAY_KINDS,
    CHAMBER_MODELS,
    SMU_MODELS,
    BenchConfig,
    load_bench_file,
)
from nvmlab.mocks.serving.tcp import WILDCARD_HOSTS, TcpBench, client_host, is_loopback
from nvmlab.models import spelled

if TYPE_CHECKING:
    from nvmlab.mocks.emulated import EmulatedBench

DESCRIPTION = """\
Serve an emulated bench (one physical world: chip, probe board, SMU, temperature chamber)
on loopback TCP ports, so that any software written for the real instruments can drive it.

It prints one line per instrument, '<role> <resource string>', then serves until Ctrl-C
(SIGINT) or SIGTERM and exits 0:

  smu TCPIP::127.0.0.1::PORT::SOCKET          raw-socket VISA instrument, LF-terminated
  chamber ASRLsocket://127.0.0.1:PORT::INSTR  serial instrument through pyvisa-py
  board ASRLsocket://127.0.0.1:PORT::INSTR

Serial instruments (chamber, board) are also reachable from pyserial as
socket://127.0.0.1:PORT (serial.serial_for_url), like a serial-to-Ethernet bridge.
The Espec chamber speaks ASCII with CR LF; the Watlow F4 speaks Modbus RTU (address 1);
the probe board protocol is in docs/probe-board.md.

Time runs at --time-scale emulated seconds per wall second (chamber ramps, soaks, chip
relaxation); instrument integration times and pulse widths shrink by the same factor.
"""

EPILOG = """\
examples:
  nvmlab emulate
      64 x 64 memristor crossbar, Keithley 2400, Espec chamber, ephemeral ports
  nvmlab emulate --smu keithley2636b --chamber watlow_f4 --rows 16 --cols 16 --seed 7
  nvmlab emulate --select 3,5 --time-scale 60 --station-out station.toml
      SMU channel A reads device (row 3, column 5) alone; 1 wall s = 60 s of chamber time
  nvmlab emulate --bench examples/bench-memristor.toml --port-base 5025
      settings from a bench file (command-line values override it); ports 5025, 5026, 5027

then, from any Python (no nvmlab needed), with the default Keithley 2400:
  import pyvisa
  smu = pyvisa.ResourceManager("@py").open_resource(
      "TCPIP::127.0.0.1::PORT::SOCKET", read_termination="\\n", write_termination="\\n")
  smu.write(":SOUR:VOLT 0.2;:FORM:ELEM CURR;:OUTP ON")   # source 0.2 V, report the current
  print(float(smu.query(":READ?")) / 0.2, "S")           # conductance of device --select R,C

exit status:
  0  stopped by Ctrl-C (SIGINT) or SIGTERM; the chip state file is saved
  1  a setting, bench file, state or station file, address or port was refused (one line
     names it and what is allowed); nothing was served
  2  a command-line option is malformed

units: volts (V), amperes (A), seconds (s), degrees Celsius (C).
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _select(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        row, col = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ROW,COL (two 0-based integers, e.g. 3,5)"
        ) from None
    if row < 0 or col < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: ROW and COL are 0-based, >= 0")
    return row, col


def _port_base(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if value != 0 and not 1024 <= value <= 65533:
        raise argparse.ArgumentTypeError(
            f"{value} is not allowed; use 0 (ephemeral ports) or 1024..65533"
        )
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "emulate",
        help="serve an emulated bench (SMU, chamber, probe board, chip) on loopback TCP",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--bench", metavar="FILE", type=Path, help="bench file (TOML) with every setting"
    )
    parser.add_argument(
        "--smu", type=spelled, choices=SMU_MODELS, help="SMU model (default keithley2400)"
    )
    parser.add_argument(
        "--chamber", type=spelled, choices=CHAMBER_MODELS, help="chamber model (default espec)"
    )
    parser.add_argument("--array", choices=ARRAY_KINDS, help="chip type (default memristor)")
    parser.add_argument(
        "--rows", type=int, metavar="N", help="array rows / word lines (default 64)"
    )
    parser.add_argument(
        "--cols", type=int, metavar="N", help="array columns / bit lines (default 64)"
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="chip seed: same seed, same chip (default 0)"
    )
    parser.add_argument(
        "--time-scale",
        type=_positive_float,
        metavar="X",
        help="emulated seconds per wall second (default 1; e.g. 60 makes a 3 C/min ramp take 1 s per 3 C)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        metavar="PATH",
        help="non-volatile chip state, rewritten after every write; reused when it exists",
    )
    parser.add_argument(
        "--station-out",
        type=Path,
        metavar="PATH",
        help="write a station file (TOML) with the served resource strings",
    )
    parser.add_argument(
        "--select",
        type=_select,
        metavar="R,C",
        help="pre-route the board so SMU channel A (2400; smua; B2902A channel 1) reads device "
        "(row R, column C) alone: unselected columns track the SMU, unselected rows grounded; "
        "on an eFlash array also the read biases (CG 2.5 V, word line 1.5 V): source the "
        "bit-line voltage (1 V) on channel A",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1, loopback only); any other address lets other "
        "machines drive the bench, which has no authentication (a warning is printed); "
        "0.0.0.0 binds every interface and the resource strings name this machine",
    )
    parser.add_argument(
        "--port-base",
        type=_port_base,
        default=0,
        metavar="PORT",
        help="smu on PORT, chamber PORT+1, board PORT+2 (default 0: free ephemeral ports)",
    )
    parser.set_defaults(handler=run)


def toml_dumps(data: Mapping[str, Any]) -> str:
    """A small TOML writer for nested tables of strings, numbers and booleans."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            escaped = v.replace("\\", "\\\\").replace('"', '\\"')
            return f'"{escaped}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} to TOML")

    lines: list[str] = []

    def table(prefix: str, d: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, Mapping)}
        if prefix and (scalars or not d):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {value(v)}")
        if prefix and scalars:
            lines.append("")
        for k, v in d.items():
            if isinstance(v, Mapping):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    return "\n".join(lines).rstrip() + "\n"


def _station_file(emulated: Any, resources: Mapping[str, str], config: BenchConfig) -> Any:
    """The station file's content; an accelerated bench tells its clients its time scale,
    so their chamber waits and soaks run on the emulated time too."""
    data = emulated.station_dict(resources)
    if config.time_scale != 1.0:
        data["station"]["time_scale"] = config.time_scale
    return data


def _exposure_warning(host: str) -> str:
    """The warning printed when the bench listens on an address other machines can reach."""
    where = "every interface" if host in WILDCARD_HOSTS else "a network interface"
    named = (
        f"; the resource strings name this machine as {client_host(host)!r} (a client "
        "elsewhere may need its IP address instead)"
        if host in WILDCARD_HOSTS
        else ""
    )
    return (
        f"nvmlab emulate: WARNING: listening on {host or '0.0.0.0'} ({where}): anyone who "
        "can reach this machine can drive the emulated instruments and rewrite the chip "
        f"state, the bench has no authentication; use --host 127.0.0.1 unless remote "
        f"clients need it{named}"
    )


def run(args: argparse.Namespace) -> int:
    """Serve the bench the options describe until SIGINT or SIGTERM; the steps in order."""
    config = _bench_config(args)
    emulated = _start_bench(config, args)
    tcp_bench = _serve_tcp(emulated, args)
    try:
        with _stop_on_signal() as stop, tcp_bench as tcp:
            if args.station_out is not None:
                _write_station_out(args.station_out, emulated, tcp, config)
            _announce(tcp, config, args.host)
            while not stop.wait(0.5):
                pass
    finally:
        emulated.close()  # saves the chip as it is now (relaxation included)
    print(
        f"nvmlab emulate: stopped after {emulated.instrument_time_s():.1f} s of instrument time",
        file=sys.stderr,
    )
    return 0


def _bench_config(args: argparse.Namespace) -> BenchConfig:
    """The bench file (if any) with the command-line values over it; --select checked
    against the array size."""
    config = load_bench_file(args.bench) if args.bench is not None else BenchConfig()
    config = config.with_overrides(
        seed=args.seed,
        array=args.array,
        rows=args.rows,
        cols=args.cols,
        time_scale=args.time_scale,
        state_file=args.state_file,
        smu_model=args.smu,
        chamber_model=args.chamber,
    )
    if args.select is not None:
        row, col = args.select
        if row >= config.rows or col >= config.cols:
            raise ConfigError(
                f"device {row},{col} is outside the {config.rows} x {config.cols} array; "
                f"allowed rows 0..{config.rows - 1}, columns 0..{config.cols - 1}",
                field="--select",
            )
    return config


def _start_bench(config: BenchConfig, args: argparse.Namespace) -> EmulatedBench:
    """Build the bench on a clock scaled to ``config.time_scale``, check that its state file
    can be written, and pre-route the board for --select."""
    from nvmlab.mocks.emulated import build_emulated_bench

    emulated = build_emulated_bench(config, clock=ScaledClock(config.time_scale))
    try:
        # Written once now: an unwritable state file is refused before anything is served
        # (the chip state is rewritten after every write pulse and when the emulator stops).
        emulated.bench.save_state()
    except OSError as exc:
        emulated.close(save_state=False)
        raise ConfigError(
            f"cannot write the chip state file {str(config.state_file)!r}: "
            f"{exc.strerror or exc}; allowed: a file in an existing, writable folder",
            field="--state-file" if args.state_file is not None else "bench.state_file",
        ) from None
    if args.select is not None:
        emulated.preselect(*args.select)
    return emulated


def _serve_tcp(emulated: EmulatedBench, args: argparse.Namespace) -> TcpBench:
    """Open the listening ports (--host, --port-base); the bench is closed if they cannot."""
    try:
        return emulated.serve_tcp(host=args.host, port_base=args.port_base)
    except OSError as exc:
        emulated.close()
        raise ConfigError(
            f"{exc}; allowed: a free --port-base (0 picks free ports) on an address of this "
            "machine (--host, default 127.0.0.1)",
            field="--host/--port-base",
        ) from None


@contextmanager
def _stop_on_signal() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs; the handlers restored after."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write_station_out(
    path: Path, emulated: EmulatedBench, tcp: TcpBench, config: BenchConfig
) -> None:
    """Write the station file (--station-out) for the served resource strings."""
    station_resources = {**tcp.resources, **tcp.serial_urls}
    try:
        path.write_text(
            "# Station file for the bench served by 'nvmlab emulate' "
            f"(seed {config.seed}, {config.rows} x {config.cols} {config.array}).\n"
            + toml_dumps(_station_file(emulated, station_resources, config))
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot write the station file {str(path)!r}: "
            f"{exc.strerror or exc}; allowed: a file in an existing, writable folder",
            field="--station-out",
        ) from None


def _announce(tcp: TcpBench, config: BenchConfig, host: str) -> None:
    """One '<role> <resource>' line per instrument on stdout, then on stderr the exposure
    warning (a non-loopback --host) and what is served."""
    for role, resource in tcp.resources.items():
        print(f"{role} {resource}")
    sys.stdout.flush()
    if not is_loopback(host):
        print(_exposure_warning(host), file=sys.stderr, flush=True)
    print(
        f"nvmlab emulate: serving {config.smu.model}, {config.chamber.model} and the probe "
        f"board on a {config.rows} x {config.cols} {config.array} array (seed {config.seed}, "
        f"time scale {config.time_scale:g}); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
