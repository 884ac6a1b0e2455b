"""What one message to the served bench costs, beside a trivial socket server.

The served bench is ``nvmlab emulate`` in a child process, as a lab user runs it; the
baseline is a server in another child process that answers every received line with a
fixed reply (no parsing, no physics), so its cost is the loopback, the kernel and the
client's own (pyvisa-py). Both are queried by the same client, in turn, query by query, so
that a change of load on a shared machine reaches both figures alike.

Every figure is a wall time in seconds (s). The instrument time a query stands for (the
2400's integration and source delay, on the bench clock) is reported apart: at time scale
1 a read costs it in real time, as on a real instrument; the emulator's own cost is what
comes on top.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: The trivial server: a listening socket on an ephemeral loopback port, printed on the
#: first line; one connection at a time; every line answered with a fixed reading.
TRIVIAL_SERVER_CODE = """\
import socket
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4)
print(listener.getsockname()[1], flush=True)
while True:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = b""
    while True:
        data = conn.recv(65536)
        if not data:
            break
        pending += data
        while b"\\n" in pending:
            _, pending = pending.split(b"\\n", 1)
            conn.sendall(b"+1.000000E-05\\n")
    conn.close()
"""

#: Array size and selected device of the served bench.
ROWS = COLS = 8
SELECTED = (3, 4)
#: 2400 settings of the timed read: 0.2 V, 0.01 PLC, no source delay, current only.
READ_NPLC = 0.01
LINE_FREQUENCY_HZ = 60.0
READ_SETUP = (
    ":SOUR:FUNC VOLT;:SOUR:VOLT 0.2;:SENS:FUNC 'CURR';:SENS:CURR:PROT 1e-3",
    f":SOUR:DEL:AUTO OFF;:SOUR:DEL 0;:SENS:CURR:NPLC {READ_NPLC};:FORM:ELEM CURR;:OUTP ON",
)
#: Instrument time (s, bench clock) of one such read: the integration alone.
READ_INSTRUMENT_S = READ_NPLC / LINE_FREQUENCY_HZ
#: Values per ``:SOUR:LIST:VOLT`` command on the 2400 (longer lists are appended).
LIST_CHUNK = 100
_START_TIMEOUT_S = 60.0
_QUERY_TIMEOUT_MS = 120_000


def _child(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _first_lines(proc: subprocess.Popen[str], count: int, what: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + _START_TIMEOUT_S
    while len(lines) < count:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit status {proc.poll()})")
        lines.append(line.strip())
    return lines


@contextmanager
def trivial_server() -> Iterator[str]:
    """Run the trivial server in a child process; yield its VISA resource string."""
    proc = _child([sys.executable, "-c", TRIVIAL_SERVER_CODE])
    try:
        port = int(_first_lines(proc, 1, "the trivial server")[0])
        yield f"TCPIP::127.0.0.1::{port}::SOCKET"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def served_bench(time_scale: float) -> Iterator[dict[str, str]]:
    """Run ``nvmlab emulate`` (8 x 8 memristor, Keithley 2400, device 3,4 selected) at
    ``time_scale`` in a child process; yield its resource strings by role."""
    cmd = [sys.executable, "-m", "nvmlab.cli", "emulate", "--rows", str(ROWS)]
    cmd += ["--cols", str(COLS), "--select", f"{SELECTED[0]},{SELECTED[1]}"]
    cmd += ["--time-scale", repr(float(time_scale))]
    proc = _child(cmd)
    try:
        lines = _first_lines(proc, 3, "nvmlab emulate")
        yield {role: resource for role, resource in (line.split(maxsplit=1) for line in lines)}
    finally:
        _stop(proc)


def _open(rm: Any, resource: str) -> Any:
    return rm.open_resource(
        resource, read_termination="\n", write_termination="\n", timeout=_QUERY_TIMEOUT_MS
    )


def _setup_read(smu: Any) -> None:
    for command in READ_SETUP:
        smu.write(command)
    smu.query("*OPC?")


@dataclass(frozen=True)
class QueryCosts:
    """Median wall costs (s) of one query at one time scale, and the trivial server's."""

    time_scale: float
    queries: int  #: queries timed per figure (median of that many)
    trivial_s: float  #: one query to the trivial server
    idn_s: float  #: ``*IDN?`` to the served 2400
    read_s: float  #: ``:READ?`` (0.01 PLC) to the served 2400
    #: Wall time the read's instrument time stands for at this time scale.
    read_instrument_s: float

    @property
    def read_overhead_s(self) -> float:
        """What a read costs beyond its instrument time (s): the emulator and the I/O."""
        return self.read_s - self.read_instrument_s

    def ratio(self, seconds: float) -> float:
        """``seconds`` in units of the trivial server's query."""
        return seconds / self.trivial_s


def _median_s(samples: list[float]) -> float:
    return float(statistics.median(samples))


def served_query_costs(queries: int, time_scale: float) -> QueryCosts:
    """Time ``queries`` rounds of (trivial query, ``*IDN?``, ``:READ?``) to a bench served at
    ``time_scale``; medians of each."""
    import pyvisa

    rm = pyvisa.ResourceManager("@py")
    try:
        with trivial_server() as trivial_resource, served_bench(time_scale) as resources:
            trivial, smu = _open(rm, trivial_resource), _open(rm, resources["smu"])
            _setup_read(smu)
            samples: dict[str, list[float]] = {"trivial": [], "idn": [], "read": []}
            calls = {
                "trivial": lambda: trivial.query(":READ?"),
                "idn": lambda: smu.query("*IDN?"),
                "read": lambda: smu.query(":READ?"),
            }
            for _ in range(max(1, queries)):
                for name, call in calls.items():
                    t0 = time.perf_counter()
                    call()
                    samples[name].append(time.perf_counter() - t0)
            smu.write(":OUTP OFF")
            smu.close()
            trivial.close()
    finally:
        rm.close()
    return QueryCosts(
        time_scale=float(time_scale),
        queries=max(1, queries),
        trivial_s=_median_s(samples["trivial"]),
        idn_s=_median_s(samples["idn"]),
        read_s=_median_s(samples["read"]),
        read_instrument_s=READ_INSTRUMENT_S / float(time_scale),
    )


@dataclass(frozen=True)
class SweepCost:
    """One list sweep: wall time per point and the instrument time per point (s)."""

    path: str
    points: int
    wall_per_point_s: float
    #: Wall time the points' instrument time stands for (0 on a virtual clock).
    instrument_per_point_s: float

    @property
    def work_per_point_s(self) -> float:
        """The emulator's (and the I/O's) wall time per point beyond the instrument time."""
        return self.wall_per_point_s - self.instrument_per_point_s


def list_sweep_commands(points: int) -> list[str]:
    """2400 commands for a ``points``-point voltage list sweep (0.1-0.2 V): the list in
    chunks of :data:`LIST_CHUNK` values, then the trigger count."""
    levels = [f"{0.1 + 0.1 * (i % 11) / 10:.3f}" for i in range(points)]
    chunks = [levels[i : i + LIST_CHUNK] for i in range(0, points, LIST_CHUNK)]
    commands = [":SOUR:VOLT:MODE LIST;:SOUR:LIST:VOLT " + ",".join(chunks[0])]
    commands += [":SOUR:LIST:VOLT:APP " + ",".join(chunk) for chunk in chunks[1:]]
    commands.append(f":TRIG:COUN {points}")
    return commands


def _timed_sweep(smu: Any, points: int) -> float:
    """Wall time (s) of one ``points``-point list sweep read back with ``:READ?``."""
    _setup_read(smu)
    for command in list_sweep_commands(points):
        smu.write(command)
    smu.query("*OPC?")
    t0 = time.perf_counter()
    values = smu.query(":READ?").split(",")
    wall = time.perf_counter() - t0
    if len(values) != points:
        raise RuntimeError(f"the list sweep returned {len(values)} values, not {points}")
    smu.write(":SOUR:VOLT:MODE FIX;:TRIG:COUN 1;:OUTP OFF")
    return wall


def list_sweep_costs(points: int, served_time_scale: float = 1e6) -> list[SweepCost]:
    """A ``points``-point 2400 list sweep in-process (virtual clock: no instrument time is
    waited) and served by ``nvmlab emulate`` at ``served_time_scale``."""
    import pyvisa

    from nvmlab.mocks.emulated import build_emulated_bench

    points = max(1, points)
    results = []
    emulated = build_emulated_bench(rows=ROWS, cols=COLS, seed=0)
    try:
        emulated.preselect(*SELECTED)
        rm = emulated.resource_manager()
        smu = _open(rm, emulated.resources()["smu"])
        wall = _timed_sweep(smu, points)
        smu.close()
        rm.close()
    finally:
        emulated.close()
    results.append(SweepCost("in-process (virtual clock)", points, wall / points, 0.0))

    rm = pyvisa.ResourceManager("@py")
    try:
        with served_bench(served_time_scale) as resources:
            smu = _open(rm, resources["smu"])
            wall = _timed_sweep(smu, points)
            smu.close()
    finally:
        rm.close()
    label = f"served, time scale {served_time_scale:g}"
    instrument = READ_INSTRUMENT_S / served_time_scale
    results.append(SweepCost(label, points, wall / points, instrument))
    return results
