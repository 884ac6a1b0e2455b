"""Fixtures for the serving tests: a tiny line instrument on a virtual clock.

The echo instrument stands for any emulated instrument: the servers only move bytes, so
what holds for it holds for the SMU, chamber and board firmware.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.firmware.base import LineInstrument
from nvmlab.mocks.serving.registry import ServedBench, register_bench, unregister_bench

_ids = itertools.count(1)


class EchoInstrument(LineInstrument):
    """``*IDN?`` -> identity; ``ECHO <text>`` -> text; ``SET <x>`` -> no reply;
    ``WORK <s>`` -> takes ``s`` seconds of instrument time, then ``DONE``."""

    model = "echo"

    def __init__(self, clock: VirtualClock, *, reply_termination: bytes = b"\n") -> None:
        super().__init__(clock)
        self.reply_termination = reply_termination
        self.received: list[str] = []
        self.resets = 0

    def handle_line(self, line: str) -> str | None:
        self.received.append(line)
        if line == "*IDN?":
            return "NVMLAB,ECHO,0,1.0"
        if line.startswith("ECHO "):
            return line[5:]
        if line.startswith("WORK "):
            self.clock.sleep(float(line[5:]))
            return "DONE"
        return None

    def reset_io(self) -> None:
        super().reset_io()
        self.resets += 1


class FakeChamber(EchoInstrument):
    """An echo instrument with the chamber emulators' fault hooks."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock, reply_termination=b"\r\n")
        self.alarm: str | None = None
        self.sensor_fault = False

    def inject_alarm(self, message: str) -> None:
        self.alarm = message

    def clear_alarm(self) -> None:
        self.alarm = None

    def inject_sensor_fault(self, on: bool) -> None:
        self.sensor_fault = on

    def handle_line(self, line: str) -> str | None:
        if line == "ALARM?":
            return self.alarm or "NONE"
        return super().handle_line(line)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def echo(clock: VirtualClock) -> EchoInstrument:
    return EchoInstrument(clock)


@pytest.fixture
def fake_chamber(clock: VirtualClock) -> FakeChamber:
    return FakeChamber(clock)


@pytest.fixture
def served(clock: VirtualClock) -> Iterator[ServedBench]:
    """A registered bench with an echo 'smu' and an echo 'chamber' (CR LF replies)."""
    bench = ServedBench(
        f"t{next(_ids)}",
        {"smu": EchoInstrument(clock), "chamber": FakeChamber(clock)},
        clock,
    )
    register_bench(bench)
    yield bench
    unregister_bench(bench.bench_id)
