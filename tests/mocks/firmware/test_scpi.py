"""The SCPI engine: the parsing and error rules every SCPI emulator shares.

A small test instrument (a "power supply" with a few settings) exercises the engine
through the byte interface, as a host would: ``write(b"...\\n")`` then ``read()``.
"""

from __future__ import annotations

import random

import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.firmware.scpi import (
    Call,
    ScpiError,
    ScpiInstrument,
    parse_bool,
    parse_channel_list,
    parse_choice,
    parse_number,
    split_params,
    unquote,
)


class Supply(ScpiInstrument):
    """A toy SCPI instrument with the node shapes real instruments use."""

    identity = "NVMLAB,SUPPLY,1,1.0"
    error_queue_size = 5
    accept_units = True

    def build_tree(self) -> None:
        self.add_number(
            "[:SOURce#2]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
            lambda c: f"volt{c.suffix('SOUR')}",
            0.0,
            -10.0,
            10.0,
            units=("V",),
        )
        self.defaults["volt2"] = 0.0
        self.add_number("[:SOURce#2]:VOLTage:RANGe", "range", 2.0, 0.0, 20.0, units=("V",))
        self.add_number("[:SOURce#2]:CURRent[:LEVel]", "curr", 0.0, -1.0, 1.0, units=("A",))
        self.add_bool(":OUTPut#2[:STATe]", "output", False)
        self.add_choice(":SOURce#2:VOLTage:MODE", "mode", ("FIXed", "SWEep", "LIST"), "FIX")
        self.tree.add(":DISPlay:TEXT", self._text, lambda c: self.settings.get("text", '""'))
        self.tree.add(":ROUTe:CLOSe", self._close, None)
        self.tree.add(":DIAGnostic:CRASh", self._crash, None)

    def _text(self, call: Call) -> None:
        call.expect(1)
        self.settings["text"] = '"' + unquote(call.params[0]) + '"'

    def _close(self, call: Call) -> None:
        call.expect(1)
        self.settings["closed"] = parse_channel_list(call.params[0], channels=4)

    def _crash(self, call: Call) -> None:
        raise ZeroDivisionError("a firmware bug")


@pytest.fixture
def dev() -> Supply:
    return Supply(VirtualClock())


def ask(dev: Supply, line: str) -> str:
    dev.write(line.encode("latin-1") + b"\n")
    return dev.read().decode()


def errors(dev: Supply) -> list[int]:
    """Drain the error queue; codes in order."""
    codes = []
    while True:
        code = int(ask(dev, ":SYST:ERR?").split(",")[0])
        if code == 0:
            return codes
        codes.append(code)


def test_identity_and_the_empty_error_queue(dev: Supply) -> None:
    assert ask(dev, "*IDN?") == "NVMLAB,SUPPLY,1,1.0\n"
    assert ask(dev, ":SYST:ERR?") == '0,"No error"\n'
    assert ask(dev, ":SYSTem:ERRor:NEXT?") == '0,"No error"\n'


def test_short_long_and_any_case_forms_are_the_same_command(dev: Supply) -> None:
    for line, expected in (
        (":SOUR:VOLT 1.5", 1.5),
        (":SOURCE:VOLTAGE 2.5", 2.5),
        (":source:voltage:level:immediate:amplitude 3.5", 3.5),
        (":SoUr:VoLtAgE:lEv 4.5", 4.5),
        ("VOLT 5.5", 5.5),  # [:SOURce] is a default node
        (":VOLT:IMM 6.5", 6.5),
    ):
        ask(dev, line)
        assert float(ask(dev, ":SOUR:VOLT?")) == expected, line
    assert errors(dev) == []


def test_only_the_short_and_long_spellings_match(dev: Supply) -> None:
    ask(dev, ":SOURC:VOLT 1")  # neither SOUR nor SOURCE
    ask(dev, ":SOUR:VOLTAG 1")
    assert errors(dev) == [-113, -113]


def test_numeric_suffixes_select_the_channel_and_are_range_checked(dev: Supply) -> None:
    ask(dev, ":SOUR2:VOLT 7;:SOUR1:VOLT 1")
    assert ask(dev, ":SOUR2:VOLT?;:SOUR:VOLT?") == "7.000000E+00;1.000000E+00\n"
    ask(dev, ":SOUR3:VOLT 1")
    ask(dev, ":DISP2:TEXT 'x'")  # DISPlay takes no suffix
    assert errors(dev) == [-114, -113]


def test_compound_lines_are_relative_to_the_previous_header(dev: Supply) -> None:
    # RANG is resolved under :SOUR:VOLT:, then ':' returns to the root.
    ask(dev, ":SOUR:VOLT:LEV 1;RANG 5;:OUTP ON")
    assert ask(dev, ":SOUR:VOLT:RANG?;LEV?") == "5.000000E+00;1.000000E+00\n"
    assert ask(dev, ":OUTP?") == "1\n"
    # Without the root reset, OUTP would be looked up under :SOUR:VOLT: -> undefined.
    ask(dev, ":SOUR:VOLT 2;OUTP OFF")
    assert errors(dev) == [-113]
    assert ask(dev, ":OUTP?") == "1\n"
    # Common commands do not change the path; a new line starts at the root again.
    assert ask(dev, ":SOUR:VOLT:RANG 3;*OPC?;LEV 4;:SOUR:VOLT?") == "1;4.000000E+00\n"
    assert ask(dev, "VOLT:RANG?") == "3.000000E+00\n"
    assert errors(dev) == []


def test_empty_message_units_and_whitespace_are_harmless(dev: Supply) -> None:
    assert ask(dev, "") == ""
    assert ask(dev, "   ") == ""
    assert ask(dev, ":SOUR:VOLT 1;;  ;:SOUR:VOLT?;") == "1.000000E+00\n"
    assert ask(dev, "  *IDN?  ") == "NVMLAB,SUPPLY,1,1.0\n"
    assert errors(dev) == []


def test_parameters_numbers_suffixes_and_keywords(dev: Supply) -> None:
    for text, volts in (("100e-3", 0.1), (".5", 0.5), ("-1E+0", -1.0), ("+2", 2.0), ("250mV", 0.25),
                        ("1 V", 1.0), ("MIN", -10.0), ("MAXimum", 10.0), ("DEF", 0.0)):  # fmt: skip
        ask(dev, f":SOUR:VOLT {text}")
        assert float(ask(dev, ":SOUR:VOLT?")) == pytest.approx(volts), text
    assert float(ask(dev, ":SOUR:VOLT? MAX")) == 10.0
    ask(dev, ":SOUR:CURR 20mA")
    assert float(ask(dev, ":SOUR:CURR?")) == pytest.approx(0.02)
    assert errors(dev) == []


def test_parameter_errors_have_their_scpi_codes(dev: Supply) -> None:
    cases = [
        (":SOUR:VOLT 11", -222),  # out of range
        (":SOUR:VOLT 1e999", -222),  # huge: overflows to infinity
        (":SOUR:VOLT " + "9" * 400, -222),
        (":SOUR:VOLT ON", -104),  # character data where a number is needed
        (":SOUR:VOLT 'one'", -104),
        (":SOUR:VOLT 1 mA", -131),  # wrong unit
        (":SOUR:VOLT", -109),  # missing parameter
        (":SOUR:VOLT 1,2", -108),  # parameter not allowed
        (":SOUR:VOLT:MODE SWEEPING", -224),  # illegal value
        (":OUTP MAYBE", -224),
        (":SOUR:VOLT 1,,", -102),
        (":ROUT:CLOS (@5)", -224),
        (":ROUT:CLOS (@1", -102),
        (":DISP:TEXT 'unterminated", -151),
    ]
    for line, code in cases:
        ask(dev, line)
        assert errors(dev) == [code], line
    assert float(ask(dev, ":SOUR:VOLT?")) == 0.0  # nothing was applied


def test_booleans_strings_and_channel_lists(dev: Supply) -> None:
    for text, state in (("ON", "1"), ("OFF", "0"), ("1", "1"), ("0", "0"), ("on", "1")):
        ask(dev, f":OUTP {text}")
        assert ask(dev, ":OUTP?") == f"{state}\n"
    ask(dev, ":DISP:TEXT 'it''s'")
    assert ask(dev, ":DISP:TEXT?") == '"it\'s"\n'
    ask(dev, ':DISP:TEXT "a;b,c"')  # separators inside strings are data
    assert ask(dev, ":DISP:TEXT?") == '"a;b,c"\n'
    for text, chans in (
        ("(@1)", [1]),
        ("(@1,2)", [1, 2]),
        ("(@1:3)", [1, 2, 3]),
        ("(@ 4, 1:2)", [4, 1, 2]),
    ):
        ask(dev, f":ROUT:CLOS {text}")
        assert dev.settings["closed"] == chans
    assert errors(dev) == []


def test_parser_functions_directly() -> None:
    assert parse_number("1.5e-3") == 1.5e-3
    assert parse_number("100uA", units=("A",), accept_units=True) == pytest.approx(1e-4)
    assert parse_number("5MA", units=("A",), accept_units=True) == pytest.approx(5e-3)
    assert parse_number("20ms", units=("S",), accept_units=True) == pytest.approx(0.02)
    assert parse_bool("2") is True
    assert parse_choice("swe", ("FIXed", "SWEep")) == "SWE"
    assert parse_choice("SWEEP", ("FIXed", "SWEep")) == "SWE"
    assert split_params(" 'a,b' , (@1,2), 3 ") == ["'a,b'", "(@1,2)", "3"]
    with pytest.raises(ScpiError) as err:
        parse_number("1mV")
    assert err.value.code == -138


def test_common_commands_and_status_registers(dev: Supply) -> None:
    assert ask(dev, "*ESR?") == "128\n"  # power-on bit, cleared by the read
    assert ask(dev, "*ESR?") == "0\n"
    ask(dev, "*OPC")
    assert ask(dev, "*ESR?") == "1\n"
    ask(dev, "*ESE 60;*SRE 36")
    assert ask(dev, "*ESE?;*SRE?") == "60;36\n"
    ask(dev, ":NOPE")  # command error -> ESR bit 5 -> ESB; error queue -> EAV
    stb = int(ask(dev, "*STB?"))
    assert stb & 0x04 and stb & 0x20 and stb & 0x40  # EAV, ESB and the request summary
    ask(dev, "*CLS")
    assert int(ask(dev, "*STB?")) == 0
    assert errors(dev) == []
    assert ask(dev, "*OPC?;*TST?") == "1;0\n"
    ask(dev, "*WAI;*TRG")
    ask(dev, "*RST")
    ask(dev, ":*RST")  # as QCoDeS's Keithley 2400 driver sends it
    ask(dev, "*FOO")
    ask(dev, "*IDN")  # no command form
    ask(dev, "*RST 1")
    assert errors(dev) == [-113, -113, -108]


def test_reset_restores_defaults(dev: Supply) -> None:
    ask(dev, ":SOUR:VOLT 3;:OUTP ON;:SOUR:VOLT:MODE LIST")
    ask(dev, "*RST")
    assert ask(dev, ":SOUR:VOLT?;:OUTP?;:SOUR:VOLT:MODE?") == "0.000000E+00;0;FIX\n"


def test_error_queue_is_a_fifo_that_reports_overflow(dev: Supply) -> None:
    ask(dev, ":SOUR:VOLT 99")
    ask(dev, ":BAD")
    assert ask(dev, ":SYST:ERR:COUN?") == "2\n"
    first = ask(dev, ":SYST:ERR?")
    assert first.startswith('-222,"Data out of range;') and "10" in first  # names the allowed range
    assert ask(dev, ":SYST:ERR:CODE?") == "-113\n"
    for _ in range(8):  # queue of 5: the fifth entry becomes -350
        ask(dev, ":BAD")
    assert ask(dev, ":SYST:ERR:CODE:ALL?") == "-113,-113,-113,-113,-350\n"
    assert ask(dev, ":SYST:ERR:ALL?") == '0,"No error"\n'


def test_a_parse_error_ends_the_program_message_but_not_an_execution_error(dev: Supply) -> None:
    assert ask(dev, ":SOUR:VOLT 99;:SOUR:VOLT?") == "0.000000E+00\n"
    assert ask(dev, ":BAD;:SOUR:VOLT?") == ""
    assert errors(dev) == [-222, -113]


def test_unread_reply_is_interrupted_by_the_next_message(dev: Supply) -> None:
    dev.write(b"*IDN?\n")
    dev.write(b":SOUR:VOLT?\n")
    assert dev.read() == b"0.000000E+00\n"
    assert errors(dev) == [-410]
    dev.talk_without_query()
    assert errors(dev) == [-420]


def test_a_handler_exception_becomes_a_device_error_not_a_crash(dev: Supply) -> None:
    assert ask(dev, ":DIAG:CRAS") == ""
    text = ask(dev, ":SYST:ERR?")
    assert text.startswith('-300,"Device-specific error;') and "ZeroDivisionError" in text


def test_malformed_input_never_raises(dev: Supply) -> None:
    rng = random.Random(7)
    alphabet = b":;*?,'\"()@ \t\r0123456789.eE+-SOURVLTAGEouputvolt\x00\xff\x80"
    for _ in range(1500):
        n = rng.randint(0, 40)
        junk = bytes(rng.choice(alphabet) for _ in range(n))
        dev.write(junk + b"\n")
        dev.read()
    dev.write(bytes(range(256)) + b"\n")
    dev.write(b"\n\n\r\n")
    dev.write(b":SOUR:VOLT 1" * 2000 + b"\n")
    dev.read()
    assert len(dev.errors) <= dev.error_queue_size
    ask(dev, "*CLS")
    assert ask(dev, "*IDN?") == "NVMLAB,SUPPLY,1,1.0\n"  # still alive and sane


def test_input_may_arrive_in_any_chunking(dev: Supply) -> None:
    for ch in b":SOUR:VOLT 2.5\r\n:SOUR:VOLT?\n":
        dev.write(bytes([ch]))
    assert dev.read() == b"2.500000E+00\n"


def test_a_repeated_message_runs_as_the_first_time(dev: Supply) -> None:
    """A message is parsed once and kept: repeating it re-runs its handlers with fresh
    parameters, relative headers resolve as before, and errors are reported each time."""
    for volts in ("1.5", "2.5"):
        for _ in range(3):
            ask(dev, f":SOUR2:VOLT {volts};VOLT:RANG 5;:OUTP2 ON")
            replies = ask(dev, ":SOUR2:VOLT?;VOLT:RANG?;:OUTP2?").strip().split(";")
            assert [float(r) for r in replies] == [float(volts), 5.0, 1.0]
            assert errors(dev) == []
    for _ in range(2):  # a handler's error, then the later unit still runs
        ask(dev, ':SOUR:VOLT 99;:DISP:TEXT "hi"')
        assert errors(dev) == [-222]
        assert ask(dev, ":DISP:TEXT?") == '"hi"\n'
    for _ in range(2):  # a parse error in the second unit: the first ran, the third not
        ask(dev, ":SOUR:VOLT 3;:NOPE 1;:SOUR:VOLT 4")
        assert errors(dev) == [-113]
        assert float(ask(dev, ":SOUR:VOLT?")) == 3.0


def test_a_command_added_after_a_message_was_kept_is_found(dev: Supply) -> None:
    ask(dev, ":DIAG:ECHO 1")
    assert errors(dev) == [-113]
    dev.tree.add(":DIAGnostic:ECHO", None, lambda call: "echo")
    assert ask(dev, ":DIAG:ECHO?") == "echo\n"
    dev.tree.add(":DIAGnostic:ECHO", lambda call: None, None)
    ask(dev, ":DIAG:ECHO 1")
    assert errors(dev) == []
