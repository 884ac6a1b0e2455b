"""Recording a session to a JSON-lines transcript and replaying it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nvmlab.drivers.keithley2400 import Keithley2400
from nvmlab.drivers.keithley2636b import Keithley2636B
from nvmlab.drivers.recording import RecordingTransport, ReplayTransport
from nvmlab.drivers.testing import Exchange, ScriptedTransport
from nvmlab.drivers.transport import open_transport
from nvmlab.errors import InstrumentTimeout, ReplayMismatch

IV_SESSION: list[Exchange] = [
    ("*IDN?", "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4107712,C32"),
    (":FORM:ELEM VOLT,CURR", None),
    (":SOUR:FUNC VOLT", None),
    (":SOUR:VOLT:MODE LIST", None),
    (":SOUR:LIST:VOLT 0.1,0.2,0.3", None),
    (":SOUR:DEL 0", None),
    (":TRIG:COUN 3", None),
    (":READ?", "0.1,5e-6,0.2,1e-5,0.3,1.5e-5"),
    (":SOUR:VOLT:MODE FIX", None),
    (":TRIG:COUN 1", None),
]


def run_iv(smu: Keithley2400, volts: list[float]) -> tuple[str, np.ndarray]:
    identity = smu.identity
    smu.set_data_elements("VOLT", "CURR")
    _, amps = smu.list_sweep(volts)
    return identity, amps


def record(tmp_path: Path, script: list[Exchange]) -> tuple[Path, ScriptedTransport]:
    path = tmp_path / "session.jsonl"
    live = ScriptedTransport(script, name="smu", resource="TCPIP::10.0.0.5::5025::SOCKET")
    return path, live


def test_every_exchange_is_one_flushed_json_line(tmp_path: Path) -> None:
    path, live = record(tmp_path, IV_SESSION)
    recorder = RecordingTransport(live, path)
    smu = Keithley2400(recorder)
    smu.identity  # noqa: B018 - the query is the point
    lines = [json.loads(line) for line in path.read_text().splitlines()]  # before close: flushed
    assert [(e["direction"], e["text"]) for e in lines] == [
        ("write", "*IDN?\n"),
        ("read", "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4107712,C32\n"),
    ]
    assert lines[0]["t"] <= lines[1]["t"]
    recorder.close()


def test_replaying_a_recorded_session_gives_the_same_results(tmp_path: Path) -> None:
    path, live = record(tmp_path, IV_SESSION)
    with RecordingTransport(live, path) as recorder:
        recorded = run_iv(Keithley2400(recorder), [0.1, 0.2, 0.3])
    live.assert_done()

    replay = ReplayTransport(path)
    replayed = run_iv(Keithley2400(replay), [0.1, 0.2, 0.3])
    assert replayed[0] == recorded[0]
    np.testing.assert_array_equal(replayed[1], recorded[1])
    assert replay.finished
    replay.assert_finished()


def test_the_first_differing_command_stops_the_replay_with_line_number(tmp_path: Path) -> None:
    path, live = record(tmp_path, IV_SESSION)
    with RecordingTransport(live, path) as recorder:
        run_iv(Keithley2400(recorder), [0.1, 0.2, 0.3])

    smu = Keithley2400(ReplayTransport(path, name="smu"))
    with pytest.raises(ReplayMismatch) as info:
        run_iv(smu, [0.1, 0.2, 0.35])
    message = str(info.value)
    assert "transcript line 6" in message
    assert "expected b':SOUR:LIST:VOLT 0.1,0.2,0.3\\n'" in message
    assert "got b':SOUR:LIST:VOLT 0.1,0.2,0.35\\n'" in message


def test_a_replay_that_reads_where_the_transcript_writes_is_a_mismatch(tmp_path: Path) -> None:
    path, live = record(tmp_path, [("*RST", None)])
    with RecordingTransport(live, path) as recorder:
        recorder.write("*RST")
    replay = ReplayTransport(path)
    with pytest.raises(ReplayMismatch, match="line 1: expected a write"):
        replay.read()
    replay = ReplayTransport(path)
    replay.write("*RST")
    with pytest.raises(ReplayMismatch, match="transcript has ended"):
        replay.write("*CLS")


def test_after_a_mismatch_the_replay_refuses_all_further_traffic(tmp_path: Path) -> None:
    path, live = record(tmp_path, IV_SESSION)
    with RecordingTransport(live, path) as recorder:
        run_iv(Keithley2400(recorder), [0.1, 0.2, 0.3])
    replay = ReplayTransport(path, name="smu")
    assert replay.is_replay and replay.mismatch is None
    with pytest.raises(ReplayMismatch) as first:
        run_iv(Keithley2400(replay), [0.1, 0.2, 0.35])
    assert replay.mismatch is first.value
    # Even the command the transcript holds next is refused: the session has diverged, and
    # nothing after the divergence (a safe state, a clean-up) is checked against it.
    refused = [
        lambda: replay.write(":SOUR:LIST:VOLT 0.1,0.2,0.3"),
        replay.read,
        lambda: replay.read_raw(4),
        lambda: replay.write_raw(b"*RST\n"),
        replay.reconnect,
        replay.assert_finished,
    ]
    for operation in refused:
        with pytest.raises(ReplayMismatch, match=r"replay stopped at .*line 6") as info:
            operation()
        assert "0.35" in str(info.value)  # it repeats what diverged


def test_only_a_replay_says_it_is_one(tmp_path: Path) -> None:
    path, live = record(tmp_path, IV_SESSION)
    with RecordingTransport(live, path) as recorder:
        assert not recorder.is_replay and not live.is_replay
    with open_transport("loop://", name="loopback", timeout_s=0.2) as loop:
        assert not loop.is_replay
    assert ReplayTransport(path).is_replay


def test_an_unfinished_replay_is_reported(tmp_path: Path) -> None:
    path, live = record(tmp_path, IV_SESSION[:1])
    with RecordingTransport(live, path) as recorder:
        Keithley2400(recorder).identity  # noqa: B018
    replay = ReplayTransport(path)
    replay.write("*IDN?")
    with pytest.raises(ReplayMismatch, match="line 2: session ended before a read"):
        replay.assert_finished()


def test_binary_replies_round_trip_as_base64(tmp_path: Path) -> None:
    amps = np.array([1e-6, 2e-6, 3e-6], dtype="<f4")
    script: list[Exchange] = [
        ("format.data = format.REAL32", None),
        ("format.byteorder = format.LITTLEENDIAN", None),
        ("printbuffer(1, 3, smua.nvbuffer1.readings)", b"#0" + amps.tobytes() + b"\n"),
    ]
    path, live = record(tmp_path, script)
    with RecordingTransport(live, path) as recorder:
        smu = Keithley2636B(recorder)
        smu.set_data_format("real32")
        recorded = smu.print_buffer("smua.nvbuffer1.readings", 3)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert any("base64" in e for e in entries)

    smu = Keithley2636B(ReplayTransport(path))
    smu.set_data_format("real32")
    np.testing.assert_array_equal(smu.print_buffer("smua.nvbuffer1.readings", 3), recorded)


def test_a_recorded_timeout_is_replayed_as_a_timeout(tmp_path: Path) -> None:
    path, live = record(tmp_path, [(":READ?", InstrumentTimeout)])
    with RecordingTransport(live, path) as recorder, pytest.raises(InstrumentTimeout):
        recorder.query(":READ?")
    replay = ReplayTransport(path)
    with pytest.raises(InstrumentTimeout, match="replayed from line 2"):
        replay.query(":READ?")


def test_reconnects_are_part_of_the_transcript(tmp_path: Path) -> None:
    path, live = record(tmp_path, [("*IDN?", "A"), ("*IDN?", "A")])
    with RecordingTransport(live, path) as recorder:
        recorder.query("*IDN?")
        recorder.reconnect()
        recorder.query("*IDN?")
    replay = ReplayTransport(path)
    assert replay.query("*IDN?") == "A"
    with pytest.raises(ReplayMismatch, match="expected a reconnect"):
        replay.write("*IDN?")
    replay = ReplayTransport(path)
    assert replay.query("*IDN?") == "A"
    replay.reconnect()
    assert replay.query("*IDN?") == "A"
    replay.assert_finished()


def test_open_transport_can_record_a_serial_session(tmp_path: Path) -> None:
    path = tmp_path / "loop.jsonl"
    with open_transport("loop://", name="loop", timeout_s=0.3, record_to=path) as t:
        assert isinstance(t, RecordingTransport)
        assert t.query("PING") == "PING"
        with t.timeout_at_least(0.5):
            assert t.inner.timeout_s == 0.5
    assert [json.loads(line)["direction"] for line in path.read_text().splitlines()] == [
        "write",
        "read",
    ]


def test_a_corrupt_transcript_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"direction": "write", "text": "*IDN?\\n", "t": 1}\nnot json\n')
    with pytest.raises(ReplayMismatch, match="line 2 is not JSON"):
        ReplayTransport(path)


def test_a_transcript_from_before_resynchronisation_still_replays(tmp_path: Path) -> None:
    """A timeout followed by more traffic, with no ``resync`` entry (older transcripts)."""
    path = tmp_path / "old.jsonl"
    entries = [
        {"direction": "write", "text": "*IDN?\n", "t": 1.0},
        {"direction": "error", "error": "InstrumentTimeout", "message": "no reply", "t": 2.0},
        {"direction": "write", "text": "*IDN?\n", "t": 3.0},
        {"direction": "read", "text": "A\n", "t": 3.1},
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    replay = ReplayTransport(path)
    with pytest.raises(InstrumentTimeout):
        replay.query("*IDN?")
    assert replay.out_of_step
    assert replay.query("*IDN?") == "A"
    replay.assert_finished()
