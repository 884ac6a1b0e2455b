"""A peer that closed its connection is reported as closed, at once, not as a timeout.

The timeouts here are long (20 s): a closed connection must not wait for them. The checks
are on the error's type (``InstrumentConnectionClosed``, never ``InstrumentTimeout``) and,
in-process, on the virtual clock (no virtual time may pass); over a real socket the wall
time is bounded by a tenth of the timeout, which only a wait for the timeout can break.
"""

from __future__ import annotations

import time

import pytest
from test_transport import LINKS, _resource, echo_idn, line_server

from nvmlab.clock import VirtualClock
from nvmlab.drivers.transport import open_transport
from nvmlab.errors import InstrumentConnectionClosed, InstrumentIOError, InstrumentTimeout
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.emulated import build_emulated_bench
from nvmlab.mocks.serving.faults import FaultSpec

TIMEOUT_S = 20.0


def test_connection_closed_is_an_io_error_and_not_a_timeout() -> None:
    assert issubclass(InstrumentConnectionClosed, InstrumentIOError)
    assert not issubclass(InstrumentConnectionClosed, InstrumentTimeout)


@pytest.mark.parametrize("kind", LINKS)
def test_a_plain_server_that_closes_is_reported_closed_at_once(kind: str) -> None:
    with line_server(echo_idn, close_after=2) as server:
        t = open_transport(_resource(kind, server.port), name="smu", timeout_s=TIMEOUT_S)
        try:
            assert t.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
            start = time.monotonic()
            with pytest.raises(InstrumentConnectionClosed, match=r"smu \(.*\).*closed") as info:
                t.query("*IDN?")  # the server closes the connection instead of answering
            elapsed = time.monotonic() - start
            assert not isinstance(info.value, InstrumentTimeout)
            assert elapsed < TIMEOUT_S / 10, elapsed
            # and it stays closed (at once) until the caller reconnects
            with pytest.raises(InstrumentConnectionClosed):
                t.query("*IDN?")
            server.close_after = None
            t.reconnect()
            assert t.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
        finally:
            t.close()


@pytest.mark.parametrize("role", ["smu", "chamber", "board"])
@pytest.mark.parametrize("stack", ["visa", "serial"])
def test_the_bench_close_fault_in_process_is_reported_closed_without_waiting(
    role: str, stack: str
) -> None:
    config = BenchConfig(rows=4, cols=4, faults={role: [FaultSpec("close", messages=(1,))]})
    bench = build_emulated_bench(config, clock=VirtualClock())
    try:
        if stack == "visa":
            t = open_transport(
                bench.resources()[role],
                name=role,
                timeout_s=TIMEOUT_S,
                visa_library=bench.visa_library(),
            )
        else:
            t = open_transport(bench.serial_urls()[role], name=role, timeout_s=TIMEOUT_S)
        with t:
            start = bench.clock.now()
            with pytest.raises(InstrumentConnectionClosed, match="closed"):
                t.query("TEMP?" if role == "chamber" else "*IDN?")
            assert bench.clock.now() - start < TIMEOUT_S / 10
    finally:
        bench.close()


@pytest.mark.parametrize("kind", LINKS)
def test_the_bench_close_fault_over_tcp_is_reported_closed_at_once(kind: str) -> None:
    config = BenchConfig(rows=4, cols=4, faults={"smu": [FaultSpec("close", messages=(2,))]})
    bench = build_emulated_bench(config)
    try:
        with bench.serve_tcp() as tcp:
            port = tcp.ports["smu"]
            with open_transport(_resource(kind, port), name="smu", timeout_s=TIMEOUT_S) as t:
                assert t.query("*IDN?")
                start = time.monotonic()
                with pytest.raises(InstrumentConnectionClosed):
                    t.query("*IDN?")
                assert time.monotonic() - start < TIMEOUT_S / 10
    finally:
        bench.close()
