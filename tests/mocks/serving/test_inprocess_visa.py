"""The in-process pyvisa library: a plain pyvisa client sees the emulated bytes, and time
passes on the bench's virtual clock (timeouts, late replies), not on the wall clock."""

from __future__ import annotations

import pytest
from pyvisa import ResourceManager
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError

from nvmlab.mocks.serving.faults import FaultInjector, FaultSpec
from nvmlab.mocks.serving.registry import ServedBench
from nvmlab.mocks.serving.visa import NvmlabVisaLibrary, resource_name


def open_smu(served: ServedBench, **kwargs: object):
    rm = ResourceManager(NvmlabVisaLibrary.for_bench(served.bench_id))
    kwargs.setdefault("read_termination", "\n")
    kwargs.setdefault("write_termination", "\n")
    return rm, rm.open_resource(resource_name(served.bench_id, "smu"), **kwargs)


def test_resources_are_listed_and_the_smu_identifies(served: ServedBench) -> None:
    rm = ResourceManager(NvmlabVisaLibrary.for_bench(served.bench_id))
    assert rm.list_resources("?*") == (
        f"TCPIP0::nvmlab-{served.bench_id}-smu::5025::SOCKET",
        f"ASRLnvmlab://{served.bench_id}/chamber::INSTR",
    )
    assert rm.list_resources() == (f"ASRLnvmlab://{served.bench_id}/chamber::INSTR",)
    smu = rm.open_resource(resource_name(served.bench_id, "smu"))
    smu.read_termination = smu.write_termination = "\n"
    assert smu.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
    smu.close()


def test_bytes_pass_unchanged_in_both_directions(served: ServedBench) -> None:
    rm, smu = open_smu(served)
    smu.write_raw(b"ECHO a;b,\xb5\r\n")
    assert served.instruments["smu"].received[-1] == "ECHO a;b,\ufffd"  # type: ignore[attr-defined]
    smu.write_raw(b"ECHO 0123456789\n")
    # A read of 4 bytes returns 4 bytes; the rest of the line stays for the next read.
    assert smu.read_bytes(4) == b"a;b,"
    assert smu.read_raw() == b"?\n"  # the instrument echoed its replacement character
    assert smu.read_raw() == b"0123456789\n"
    rm.close()


def test_an_unanswered_read_times_out_at_once_and_costs_the_timeout_in_virtual_time(
    served: ServedBench,
) -> None:
    # An hour-long timeout, far beyond the 120 s pytest timeout: it passes only if the wait
    # is on the virtual clock (no wall-clock threshold that a loaded machine could break).
    rm, smu = open_smu(served, timeout=3_600_000)
    smu.write("SET 1")
    t0 = served.clock.now()
    with pytest.raises(VisaIOError) as err:
        smu.read()
    assert err.value.error_code == StatusCode.error_timeout
    assert served.clock.now() - t0 == pytest.approx(3600.0)
    rm.close()


def test_instrument_work_advances_the_virtual_clock(served: ServedBench) -> None:
    rm, smu = open_smu(served)
    t0 = served.clock.now()
    assert smu.query("WORK 0.3") == "DONE"
    assert served.clock.now() - t0 == pytest.approx(0.3)
    rm.close()


def test_a_late_reply_times_out_then_arrives_on_a_later_read(served: ServedBench) -> None:
    served.instruments["smu"] = FaultInjector(  # type: ignore[index]
        served.instruments["smu"], [FaultSpec("late", messages=(2,), delay_s=5.0)]
    )
    rm, smu = open_smu(served, timeout=2000)
    assert smu.query("ECHO one") == "one"
    t0 = served.clock.now()
    with pytest.raises(VisaIOError) as err:
        smu.query("ECHO two")
    assert err.value.error_code == StatusCode.error_timeout
    with pytest.raises(VisaIOError):
        smu.read()
    assert served.clock.now() - t0 == pytest.approx(4.0)
    # The third read waits until the reply's due time (5 s after it was sent).
    assert smu.read() == "two"
    assert served.clock.now() - t0 == pytest.approx(5.0)
    # A later reply never overtakes; with the late one delivered, traffic is normal again.
    assert smu.query("ECHO three") == "three"
    rm.close()


def test_a_reply_late_but_within_the_timeout_is_read_after_its_delay(served: ServedBench) -> None:
    served.instruments["smu"] = FaultInjector(  # type: ignore[index]
        served.instruments["smu"], [FaultSpec("late", every=1, delay_s=0.4)]
    )
    rm, smu = open_smu(served, timeout=1000)
    t0 = served.clock.now()
    assert smu.query("ECHO x") == "x"
    assert served.clock.now() - t0 == pytest.approx(0.4)
    rm.close()


def test_dropped_and_garbled_replies(served: ServedBench) -> None:
    inj = FaultInjector(
        served.instruments["smu"],
        [FaultSpec("drop", messages=(2,)), FaultSpec("garble", messages=(3,), seed=7)],
    )
    served.instruments["smu"] = inj  # type: ignore[index]
    rm, smu = open_smu(served, timeout=1000)
    assert smu.query("ECHO first") == "first"
    with pytest.raises(VisaIOError) as err:
        smu.query("ECHO second")
    assert err.value.error_code == StatusCode.error_timeout
    garbled = smu.query("ECHO 1.234567E-05")
    assert garbled != "1.234567E-05" and len(garbled) == len("1.234567E-05")
    assert smu.query("ECHO fourth") == "fourth"
    assert inj.log == [(2, "drop"), (3, "garble")]
    rm.close()


def test_a_closed_connection_is_reported_until_the_client_reconnects(served: ServedBench) -> None:
    served.instruments["smu"] = FaultInjector(  # type: ignore[index]
        served.instruments["smu"], [FaultSpec("close", messages=(1,))]
    )
    rm, smu = open_smu(served)
    with pytest.raises(VisaIOError) as err:
        smu.query("ECHO gone")
    assert err.value.error_code == StatusCode.error_connection_lost
    with pytest.raises(VisaIOError) as err:
        smu.write("ECHO again")
    assert err.value.error_code == StatusCode.error_connection_lost
    smu.close()
    smu = rm.open_resource(resource_name(served.bench_id, "smu"), read_termination="\n")
    assert smu.query("ECHO back") == "back"
    rm.close()


def test_device_clear_discards_partial_input_and_unread_output(served: ServedBench) -> None:
    rm, smu = open_smu(served)
    smu.write("ECHO stale")
    smu.write_raw(b"ECHO half")
    smu.clear()
    assert smu.query("ECHO fresh") == "fresh"
    rm.close()


def test_unknown_resources_are_not_found(served: ServedBench) -> None:
    rm = ResourceManager(NvmlabVisaLibrary.for_bench(served.bench_id))
    with pytest.raises(VisaIOError) as err:
        rm.open_resource(f"ASRLnvmlab://{served.bench_id}/oven::INSTR")
    assert err.value.error_code == StatusCode.error_resource_not_found
    with pytest.raises(VisaIOError):
        rm.open_resource("TCPIP0::nvmlab-nosuchbench-smu::5025::SOCKET")
    rm.close()


def test_serial_session_ends_reads_on_the_termination_character(served: ServedBench) -> None:
    rm = ResourceManager(NvmlabVisaLibrary.for_bench(served.bench_id))
    chamber = rm.open_resource(
        resource_name(served.bench_id, "chamber"), read_termination="\r\n", write_termination="\r\n"
    )
    assert chamber.query("ECHO 25.0,25.0") == "25.0,25.0"
    chamber.write("ECHO raw")
    assert chamber.read_raw() == b"raw\r\n"
    rm.close()
