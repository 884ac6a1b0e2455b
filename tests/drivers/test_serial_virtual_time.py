"""A serial read that times out on an in-process bench costs its timeout in virtual time."""

from __future__ import annotations

import pytest

from nvmlab.drivers.transport import open_transport
from nvmlab.errors import InstrumentTimeout
from nvmlab.mocks.emulated import build_emulated_bench


def test_a_silent_nvmlab_port_times_out_after_exactly_its_timeout_of_bench_time() -> None:
    bench = build_emulated_bench(rows=4, cols=4, seed=1)
    try:
        url = bench.serial_urls()["chamber"]
        transport = open_transport(url, name="chamber", timeout_s=0.3, read_termination="\r\n")
        t0 = bench.clock.now()
        with pytest.raises(InstrumentTimeout):
            transport.read()  # nothing was asked: the chamber stays silent
        waited = bench.clock.now() - t0
        transport.close()
    finally:
        bench.close()
    # One poll slice of tolerance: the port is read in slices of at most 0.05 s.
    assert 0.3 <= waited <= 0.3 + 0.05 + 1e-9


def test_a_reply_still_arrives_through_the_sliced_reads() -> None:
    bench = build_emulated_bench(rows=4, cols=4, seed=1)
    try:
        url = bench.serial_urls()["chamber"]
        transport = open_transport(
            url, name="chamber", timeout_s=0.3, read_termination="\r\n", write_termination="\r\n"
        )
        assert transport.query("TEMP?").count(",") == 3
        transport.close()
    finally:
        bench.close()
