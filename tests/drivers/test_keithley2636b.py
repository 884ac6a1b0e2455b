"""Keithley 2636B (TSP) protocol: the exact Lua sent and the printed replies parsed."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.drivers.keithley2636b import PULSE_TRAIN_SCRIPT, Keithley2636B, lua_literal
from nvmlab.drivers.testing import expected_protocol
from nvmlab.errors import InstrumentProtocolError, InstrumentTimeout

IDN = "Keithley Instruments Inc., Model 2636B, 4404321, 4.0.4"


def test_identity() -> None:
    with expected_protocol(Keithley2636B, [("*IDN?", IDN)]) as smu:
        assert smu.identity == IDN


@pytest.mark.parametrize("ch", ["smua", "smub"])
@pytest.mark.parametrize(
    ("attr", "value", "sent", "query", "reply", "parsed"),
    [
        ("source_function", "voltage", "{ch}.source.func = {ch}.OUTPUT_DCVOLTS",
         "print({ch}.source.func)", "1.00000e+00", "voltage"),
        ("source_function", "current", "{ch}.source.func = {ch}.OUTPUT_DCAMPS",
         "print({ch}.source.func)", "0.00000e+00", "current"),
        ("source_voltage", 0.25, "{ch}.source.levelv = 0.25",
         "print({ch}.source.levelv)", "2.50000e-01", 0.25),
        ("source_voltage_range", 2, "{ch}.source.rangev = 2",
         "print({ch}.source.rangev)", "2.00000e+00", 2.0),
        ("current_limit", 1e-4, "{ch}.source.limiti = 0.0001",
         "print({ch}.source.limiti)", "1.00000e-04", 1e-4),
        ("source_delay", 0.0, "{ch}.source.delay = 0",
         "print({ch}.source.delay)", "0.00000e+00", 0.0),
        ("current_range", 1e-6, "{ch}.measure.rangei = 1e-06",
         "print({ch}.measure.rangei)", "1.00000e-06", 1e-6),
        ("nplc", 0.01, "{ch}.measure.nplc = 0.01",
         "print({ch}.measure.nplc)", "1.00000e-02", 0.01),
        ("output_enabled", True, "{ch}.source.output = {ch}.OUTPUT_ON",
         "print({ch}.source.output)", "1.00000e+00", True),
        ("output_enabled", False, "{ch}.source.output = {ch}.OUTPUT_OFF",
         "print({ch}.source.output)", "0.00000e+00", False),
    ],
)  # fmt: skip
def test_each_channel_setting_is_written_and_read_back(
    ch: str, attr: str, value: object, sent: str, query: str, reply: str, parsed: object
) -> None:
    script = [(sent.format(ch=ch), None), (query.format(ch=ch), reply)]
    with expected_protocol(Keithley2636B, script) as smu:
        channel = smu.channel(ch)
        setattr(channel, attr, value)
        assert getattr(channel, attr) == parsed


def test_out_of_range_values_raise_before_sending() -> None:
    with expected_protocol(Keithley2636B, []) as smu:
        with pytest.raises(ValueError, match="-202..202"):
            smu.smua.source_voltage = 300
        with pytest.raises(ValueError, match="0.001..25"):
            smu.smub.nplc = 100
        with pytest.raises(ValueError, match="allowed 'a'"):
            smu.channel("c")


def test_configure_voltage_source() -> None:
    script = [
        ("smub.source.func = smub.OUTPUT_DCVOLTS", None),
        ("smub.source.rangev = 2", None),
        ("smub.source.limiti = 1e-05", None),
        ("smub.measure.nplc = 0.1", None),
    ]
    with expected_protocol(Keithley2636B, script) as smu:
        smu.smub.configure_voltage_source(current_limit_a=1e-5, nplc=0.1, voltage_range_v=2)


def test_single_readings_are_print_queries() -> None:
    script = [
        ("print(smua.measure.i())", "1.23450e-05"),
        ("print(smub.measure.iv())", "2.00000e-06\t2.00000e-01"),
    ]
    with expected_protocol(Keithley2636B, script) as smu:
        assert smu.smua.measure_current() == pytest.approx(1.2345e-5)
        assert smu.smub.measure_iv() == pytest.approx((2e-6, 0.2))


def test_reset_and_error_queue() -> None:
    script = [
        ("reset()", None),
        ("errorqueue.clear()", None),
        ("print(errorqueue.count)", "2.00000e+00"),
        ("print(errorqueue.next())", "-2.85000e+02\tProgram syntax error\t2.00000e+00\t0"),
        ("print(errorqueue.next())", "1.10400e+03\tParameter too big\t2.00000e+00\t0"),
    ]
    with expected_protocol(Keithley2636B, script) as smu:
        smu.reset()
        smu.clear()
        assert smu.errors() == [(-285, "Program syntax error"), (1104, "Parameter too big")]


def test_check_errors_names_the_instrument_error() -> None:
    script = [
        ("print(errorqueue.count)", "1.00000e+00"),
        ("print(errorqueue.next())", "-2.85000e+02\tProgram syntax error\t2\t0"),
    ]
    with (
        expected_protocol(Keithley2636B, script) as smu,
        pytest.raises(InstrumentProtocolError, match="Program syntax error"),
    ):
        smu.check_errors()


def _sweep_commands(ch: str, levels: str, n: int) -> list[tuple[str, None]]:
    return [
        (f"{ch}.nvbuffer1.clear()", None),
        (f"{ch}.trigger.source.listv({levels})", None),
        (f"{ch}.trigger.source.action = {ch}.ENABLE", None),
        (f"{ch}.trigger.measure.action = {ch}.ENABLE", None),
        (f"{ch}.trigger.measure.i({ch}.nvbuffer1)", None),
        (f"{ch}.trigger.endsweep.action = {ch}.SOURCE_IDLE", None),
        (f"{ch}.trigger.count = {n}", None),
        (f"{ch}.trigger.arm.count = 1", None),
        (f"{ch}.trigger.initiate()", None),
        ("waitcomplete()", None),
    ]


def test_list_sweep_ascii_is_one_printbuffer() -> None:
    script = _sweep_commands("smua", "{0, 0.1, 0.2}", 3) + [
        ("printbuffer(1, 3, smua.nvbuffer1.readings)", "0.00000e+00, 5.00000e-06, 1.00000e-05")
    ]
    with expected_protocol(Keithley2636B, script) as smu:
        volts, amps = smu.smua.list_sweep([0.0, 0.1, 0.2])
    np.testing.assert_allclose(volts, [0, 0.1, 0.2])
    np.testing.assert_allclose(amps, [0, 5e-6, 1e-5])


@pytest.mark.parametrize(("fmt", "dtype"), [("real32", "<f4"), ("real64", "<f8")])
def test_list_sweep_binary_decodes_real32_and_real64(fmt: str, dtype: str) -> None:
    # The last value's bytes hold LF (0x0A): a binary block is read by length, not to LF.
    lf_laden = np.frombuffer(b"\x0a" * np.dtype(dtype).itemsize, dtype=dtype)[0]
    amps = np.array([1e-6, -2.5e-6, 3.75e-5, lf_laden], dtype=dtype)
    assert b"\n" in amps.tobytes()
    block = b"#0" + amps.tobytes() + b"\n"
    script = (
        [
            (f"format.data = format.{fmt.upper()}", None),
            ("format.byteorder = format.LITTLEENDIAN", None),
        ]
        + _sweep_commands("smub", "{0.1, 0.2, 0.3, 0.4}", 4)
        + [("printbuffer(1, 4, smub.nvbuffer1.readings)", block)]
    )
    with expected_protocol(Keithley2636B, script) as smu:
        smu.set_data_format(fmt)
        _, got = smu.smub.list_sweep([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(got, amps.astype(float))


def test_binary_block_with_a_bad_header_is_a_protocol_error() -> None:
    script = [
        ("format.data = format.REAL32", None),
        ("format.byteorder = format.LITTLEENDIAN", None),
        ("printbuffer(1, 1, smua.nvbuffer1.readings)", b"1.0e-6\n"),
    ]
    with expected_protocol(Keithley2636B, script) as smu:
        smu.set_data_format("real32")
        with pytest.raises(InstrumentProtocolError, match="binary header"):
            smu.print_buffer("smua.nvbuffer1.readings", 1)
        smu.transport.clear_input()


def test_list_sweep_with_a_short_buffer_is_a_protocol_error() -> None:
    script = _sweep_commands("smua", "{0.1, 0.2}", 2) + [
        ("printbuffer(1, 2, smua.nvbuffer1.readings)", "1.0e-6")
    ]
    with (
        expected_protocol(Keithley2636B, script) as smu,
        pytest.raises(InstrumentProtocolError, match="expected 2 values"),
    ):
        smu.smua.list_sweep([0.1, 0.2])


def test_list_sweep_with_a_source_delay_sets_it_first() -> None:
    script = [("smua.source.delay = 0.001", None)] + _sweep_commands("smua", "{0.5}", 1)
    script.append(("printbuffer(1, 1, smua.nvbuffer1.readings)", "2.5e-05"))
    with expected_protocol(Keithley2636B, script) as smu:
        _, amps = smu.smua.list_sweep(np.array([0.5]), source_delay_s=1e-3)
    assert amps.tolist() == [2.5e-5]


def test_list_sweep_rejects_bad_levels_before_sending() -> None:
    with expected_protocol(Keithley2636B, []) as smu, pytest.raises(ValueError):
        smu.smua.list_sweep([0.1, float("nan")])


def test_single_pulse_is_one_chunk_timed_on_the_instrument() -> None:
    script = [("smua.source.levelv = 1.2 delay(0.001) smua.source.levelv = 0", None)]
    with expected_protocol(Keithley2636B, script) as smu:
        smu.smua.pulse(1.2, 1e-3)


def test_upload_and_run_a_script_with_parameters() -> None:
    source = "for k = 1, n do\n  print(k * step)\nend"
    script = [
        ("loadscript ramp", None),
        ("for k = 1, n do", None),
        ("  print(k * step)", None),
        ("end", None),
        ("endscript", None),
        ("n = 2", None),
        ("step = 0.5", None),
        ("ramp()", None),
        (None, "5.00000e-01"),
        (None, "1.00000e+00"),
    ]
    with expected_protocol(Keithley2636B, script) as smu:
        smu.load_script("ramp", source)
        assert smu.run_script("ramp", {"n": 2, "step": 0.5}, reply_lines=2) == [
            "5.00000e-01",
            "1.00000e+00",
        ]


def test_script_names_must_be_lua_identifiers() -> None:
    with expected_protocol(Keithley2636B, []) as smu:
        with pytest.raises(ValueError, match="Lua identifier"):
            smu.load_script("bad name", "print(1)")
        with pytest.raises(ValueError, match="endscript"):
            smu.load_script("ok", "print(1)\nendscript\nprint(2)")


def pulse_train_upload(v_max: str = "202", v_read_max: str = "202", width_max: str = "10") -> list:
    """The exchanges that upload the pulse-train script and define it with these caps."""
    upload: list = [("loadscript nvmlab_pulses", None)]
    upload += [(line, None) for line in PULSE_TRAIN_SCRIPT.splitlines()]
    upload.append(("endscript", None))
    return upload + pulse_train_define(v_max, v_read_max, width_max)


def pulse_train_define(v_max: str, v_read_max: str, width_max: str) -> list:
    return [
        (f"nvmlab_v_max = {v_max}", None),
        (f"nvmlab_v_read_max = {v_read_max}", None),
        (f"nvmlab_width_max = {width_max}", None),
        ("nvmlab_pulses()", None),
    ]


def test_pulse_train_uploads_once_and_runs_on_the_instrument() -> None:
    call1 = "nvmlab_pulse_train(smub, 1.5, 0.0001, 0, 3, 0.1, true)"
    call2 = "nvmlab_pulse_train(smub, -1, 0.0001, 0.001, 2, 0, false)"
    script = pulse_train_upload() + [
        (call1, "1.0e-06, 2.0e-06, 3.0e-06"),
        (call2, "2.00000e+00"),
    ]
    with expected_protocol(Keithley2636B, script) as smu:
        reads = smu.pulse_train("b", 1.5, 1e-4, 3, v_read=0.1)
        assert reads.tolist() == [1e-6, 2e-6, 3e-6]
        assert smu.pulse_train(smu.smub, -1.0, 1e-4, 2, read=False, gap_s=1e-3).size == 0


def test_the_pulse_train_script_carries_its_caps_and_is_redefined_when_they_change() -> None:
    """The caps go up as the script's parameters; new caps redefine it, no second upload."""
    script = pulse_train_upload("2.5", "0.5", "0.1")
    script += [("nvmlab_pulse_train(smua, 2, 0.001, 0, 1, 0.2, true)", "1e-6")]
    script += [("nvmlab_pulse_train(smua, -2.5, 0.001, 0, 1, 0, true)", "2e-6")]
    script += pulse_train_define("3", "0.5", "0.1")
    script += [("nvmlab_pulse_train(smua, 3, 0.001, 0, 1, 0, true)", "3e-6")]
    caps = {"v_read_max": 0.5, "width_max_s": 0.1}
    with expected_protocol(Keithley2636B, script) as smu:
        assert smu.pulse_train("a", 2.0, 1e-3, 1, v_read=0.2, v_max=2.5, **caps)[0] == 1e-6
        assert smu.pulse_train("a", -2.5, 1e-3, 1, v_max=2.5, **caps)[0] == 2e-6
        assert smu.pulse_train("a", 3.0, 1e-3, 1, v_max=3.0, **caps)[0] == 3e-6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"v_pulse": 2.6}, r"v_pulse: 2.6 is outside the allowed range -2.5..2.5"),
        ({"v_read": -0.6}, r"v_read: -0.6 is outside the allowed range -0.5..0.5"),
        ({"width_s": 0.2}, r"width_s: 0.2 is outside the allowed range 1e-05..0.1"),
        ({"v_max": 300.0}, r"v_max: 300.0 is outside the allowed range 0..202"),
    ],
)
def test_a_pulse_train_beyond_its_caps_sends_nothing(kwargs: dict, message: str) -> None:
    args = {"v_pulse": 1.0, "width_s": 1e-3, "v_max": 2.5, "v_read_max": 0.5, "width_max_s": 0.1}
    args.update(kwargs)
    with expected_protocol(Keithley2636B, []) as smu:
        with pytest.raises(ValueError, match=message):
            smu.pulse_train("a", count=3, **args)
        assert smu.transport.sent == []


def test_pulse_train_reply_with_a_wrong_count_is_a_protocol_error() -> None:
    script = pulse_train_upload()
    script += [("nvmlab_pulse_train(smua, 1, 0.001, 0, 2, 0, true)", "1e-6")]
    with (
        expected_protocol(Keithley2636B, script) as smu,
        pytest.raises(InstrumentProtocolError, match="expected 2 values"),
    ):
        smu.pulse_train("a", 1.0, 1e-3, 2)


def test_a_measurement_that_times_out_is_not_repeated() -> None:
    with (
        expected_protocol(Keithley2636B, [("print(smua.measure.i())", InstrumentTimeout)]) as smu,
        pytest.raises(InstrumentTimeout),
    ):
        smu.smua.measure_current()


def test_lua_literals() -> None:
    assert lua_literal(None) == "nil"
    assert lua_literal(True) == "true"
    assert lua_literal('a "q"') == '"a \\"q\\""'
    assert lua_literal([1, 0.5]) == "{1, 0.5}"
    with pytest.raises(ValueError):
        lua_literal(float("inf"))


def test_pulse_train_readings_come_back_in_the_binary_format_in_force() -> None:
    """After ``format.data = REAL32`` the pulse train's printbuffer reply is binary too."""
    import struct

    readings = [1e-6, 2e-6, 3e-6]
    binary = b"#0" + struct.pack("<3f", *readings) + b"\n"
    script: list = [
        ("format.data = format.REAL32", None),
        ("format.byteorder = format.LITTLEENDIAN", None),
    ]
    script += pulse_train_upload()
    script += [("nvmlab_pulse_train(smua, 1, 0.001, 0, 3, 0, true)", binary)]
    with expected_protocol(Keithley2636B, script) as smu:
        smu.set_data_format("real32")
        values = smu.pulse_train("a", 1.0, 1e-3, 3)
    np.testing.assert_allclose(values, readings, rtol=1e-6)


def test_list_sweep_trace_collects_and_prints_the_timestamps() -> None:
    script = (
        [("smua.nvbuffer1.collecttimestamps = 1", None)]
        + _sweep_commands("smua", "{0.1, 0.2}", 2)
        + [
            ("printbuffer(1, 2, smua.nvbuffer1.readings)", "5.00000e-06, 1.00000e-05"),
            ("printbuffer(1, 2, smua.nvbuffer1.timestamps)", "1.00000e-03, 2.80000e-02"),
        ]
    )
    with expected_protocol(Keithley2636B, script) as smu:
        volts, amps, times = smu.smua.list_sweep_trace([0.1, 0.2])
    np.testing.assert_allclose(amps, [5e-6, 1e-5])
    np.testing.assert_allclose(times, [0.0, 0.027])
