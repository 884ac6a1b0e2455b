"""Probe board driver: one query per command, exact bytes, OK / value / ERR replies."""

from __future__ import annotations

import pytest

from nvmlab.drivers.probe_board import BoardConfiguration, BoardLimits, ProbeBoard
from nvmlab.drivers.testing import expected_protocol
from nvmlab.errors import InstrumentProtocolError, InstrumentTimeout


def test_identify_and_configuration() -> None:
    with expected_protocol(
        ProbeBoard,
        [(b"*IDN?\n", "NVMLAB,PROBE-BOARD,PB-000001,1.0"), (b"CONF?\n", "MEMRISTOR,8,8")],
    ) as board:
        assert board.identify() == "NVMLAB,PROBE-BOARD,PB-000001,1.0"
        assert board.configuration() == BoardConfiguration("MEMRISTOR", 8, 8)


def test_hardware_limits_parse_the_documented_eflash_reply() -> None:
    reply = (
        "DAC=-5.0000,5.0000;PULSE=12.0000;WIDTH=1.0000e-07,1.0000e+00;CG=0.0000,12.0000;"
        "EG=0.0000,14.0000;SL=0.0000,6.0000;WL=0.0000,5.0000"
    )
    with expected_protocol(ProbeBoard, [("LIMITS?", reply)]) as board:
        assert board.hardware_limits() == BoardLimits(
            (-5.0, 5.0), 12.0, (1e-7, 1.0), (0.0, 12.0), (0.0, 14.0), (0.0, 6.0), (0.0, 5.0)
        )


def test_a_read_routing_session_as_in_the_protocol_document() -> None:
    with expected_protocol(
        ProbeBoard,
        [
            ("READ:SCHEME TRACK", "OK"),
            ("SEL 3,4", "OK"),
            ("SEL?", "3,4"),
            ("LINE? R3", "SMUA"),
            ("LINE C2,DAC,0.25", "OK"),
            ("LINE? C2", "DAC,0.2500"),
            ("SEL?", "NONE"),
            ("LINE R0,FLOAT", "OK"),
            ("READ:COL SMUB", "OK"),
            ("ROWS:DAC 0.1,0.2,0,0,0,0,0,-0.1", "OK"),
            ("GND:ALL", "OK"),
        ],
    ) as board:
        board.set_read_scheme("TRACK")
        board.select(3, 4)
        assert board.selection() == (3, 4)
        assert board.line_state("row", 3) == ("SMUA", None)
        board.set_line("col", 2, "DAC", 0.25)
        assert board.line_state("col", 2) == ("DAC", 0.25)
        assert board.selection() is None
        board.set_line("row", 0, "FLOAT")
        board.set_read_column("SMUB")
        board.set_row_voltages([0.1, 0.2, 0, 0, 0, 0, 0, -0.1])
        board.ground_all()


def test_pulses_with_and_without_a_scheme() -> None:
    with expected_protocol(
        ProbeBoard,
        [
            ("PULSE 3,4,1.5,0.001,V3", "OK"),
            ("PULSE 3,4,-1.2,0.0011", "OK"),
            ("WRITE:SCHEME V2", "OK"),
            ("PULSE 0,0,2,1e-07,FLOAT", "OK"),
        ],
    ) as board:
        board.pulse(3, 4, 1.5, 1e-3, "V3")
        board.pulse(3, 4, -1.2, 1.1e-3)
        board.set_write_scheme("V2")
        board.pulse(0, 0, 2.0, 1e-7, "FLOAT")


def test_eflash_biases_and_status() -> None:
    with expected_protocol(
        ProbeBoard,
        [
            ("EFLASH:CG 2.5", "OK"),
            ("EFLASH:WL 1.5", "OK"),
            ("EFLASH?", "2.5000,0.0000,0.0000,1.5000"),
            ("STAT?", "SEL=NONE;READ=TRACK;COL=GND;WRITE=V2;TEMP=25.0"),
            ("ERR?", '0,"No error"'),
        ],
    ) as board:
        board.set_eflash_bias("CG", 2.5)
        board.set_eflash_bias("WL", 1.5)
        assert board.eflash_biases() == (2.5, 0.0, 0.0, 1.5)
        assert board.status() == {
            "SEL": "NONE",
            "READ": "TRACK",
            "COL": "GND",
            "WRITE": "V2",
            "TEMP": "25.0",
        }
        assert board.last_error() == (0, "No error")


@pytest.mark.parametrize(
    ("call", "sent", "reply", "message"),
    [
        (
            lambda b: b.select(8, 0),
            "SEL 8,0",
            'ERR 4,"SEL row: 8 out of range 0..7"',
            "error 4: SEL row: 8 out of range 0..7",
        ),
        (
            lambda b: b.set_eflash_bias("CG", 2.5),
            "EFLASH:CG 2.5",
            'ERR 5,"EFLASH:CG: not available on a MEMRISTOR board"',
            "error 5: EFLASH:CG: not available",
        ),
        (lambda b: b.ground_all(), "GND:ALL", "KO", "unexpected reply 'KO' to 'GND:ALL'"),
        (lambda b: b.configuration(), "CONF?", "MEMRISTOR,8", "is not '<kind>,<rows>,<cols>'"),
    ],
)
def test_err_and_malformed_replies_raise_naming_the_command(
    call, sent: str, reply: str, message: str
) -> None:  # type: ignore[no-untyped-def]
    with (
        expected_protocol(ProbeBoard, [(sent, reply)]) as board,
        pytest.raises(InstrumentProtocolError) as info,
    ):
        call(board)
    assert message in str(info.value)


def test_a_lost_reply_is_a_timeout_and_settings_are_not_resent() -> None:
    with (
        expected_protocol(ProbeBoard, [("PULSE 0,0,1,0.001", InstrumentTimeout)]) as board,
        pytest.raises(InstrumentTimeout),
    ):
        board.pulse(0, 0, 1.0, 1e-3)


def test_malformed_arguments_send_nothing() -> None:
    with expected_protocol(ProbeBoard, []) as board:
        with pytest.raises(ValueError, match="non-negative integer"):
            board.select(-1, 0)
        with pytest.raises(ValueError, match="finite"):
            board.set_line("col", 1, "DAC", float("inf"))
        with pytest.raises(ValueError, match="GND, FLOAT, SMUA, SMUB, TRACK, TRACKB, DAC"):
            board.set_line("row", 1, "HIGH")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="V2, V3, GND, FLOAT"):
            board.pulse(0, 0, 1.0, 1e-3, "V4")  # type: ignore[arg-type]


def test_the_tracking_read_routing_bytes() -> None:
    """READ:SCHEME TRACKB (docs/probe-board.md, The tracking read) and a TRACKB line."""
    with expected_protocol(
        ProbeBoard,
        [
            ("READ:SCHEME TRACKB", "OK"),
            ("SEL 3,4", "OK"),
            ("LINE? R0", "TRACKB"),
            ("LINE C1,TRACKB", "OK"),
            ("READ:SCHEME?", "TRACKB"),
        ],
    ) as board:
        board.set_read_scheme("TRACKB")
        board.select(3, 4)
        assert board.line_state("row", 0) == ("TRACKB", None)
        board.set_line("col", 1, "TRACKB")
        assert board.read_scheme() == "TRACKB"


def test_the_board_role_asks_for_the_tracking_read_with_track_b() -> None:
    from nvmlab.instruments.boards import make_array_board
    from nvmlab.instruments.safety import SafetyLimits

    with expected_protocol(
        ProbeBoard,
        [("CONF?", "MEMRISTOR,8,8"), ("READ:SCHEME TRACKB", "OK"), ("SEL 3,4", "OK")],
    ) as board:
        make_array_board(board, SafetyLimits()).select(3, 4, unselected="track-b")
