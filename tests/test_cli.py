"""The top-level command line: help, errors as one line, passwords never shown."""

from __future__ import annotations

import pytest

from nvmlab import cli
from nvmlab.errors import ConfigError
from nvmlab.masking import mask_passwords


def test_help_lists_every_layers_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("emulate", "station", "db", "runs", "export", "demo", "bench"):
        assert command in out


def test_no_command_prints_help_and_exits_2(capsys) -> None:
    assert cli.main([]) == 2
    assert "usage: nvmlab" in capsys.readouterr().out


def test_an_nvmlab_error_is_one_masked_line(monkeypatch, capsys) -> None:
    def fail(args) -> int:
        raise ConfigError(
            "cannot open postgresql+psycopg://lab:s3cret@db.lab/results", file="job.toml"
        )

    monkeypatch.setattr(cli, "build_parser", _parser_with(fail))
    assert cli.main(["boom"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "job.toml" in err
    assert "s3cret" not in err and "lab:***@db.lab" in err


def test_an_unexpected_exception_shows_a_masked_traceback_and_exits_1(monkeypatch, capsys) -> None:
    def crash(args) -> int:
        raise RuntimeError("driver said: postgresql+psycopg://u:hunter2@127.0.0.1:1/x refused")

    monkeypatch.setattr(cli, "build_parser", _parser_with(crash))
    assert cli.main(["boom"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError" in err
    assert "hunter2" not in err
    assert err.rstrip().splitlines()[-1].startswith("nvmlab: error: unexpected RuntimeError")


def test_mask_passwords_also_masks_literal_passwords() -> None:
    text = "login as u with p@ss:w0rd via sqlite:///x and postgresql://u:p@ss:w0rd@h/db"
    masked = mask_passwords(text, ["p@ss:w0rd"])
    assert "w0rd" not in masked


def _parser_with(handler):
    import argparse

    def build() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="nvmlab")
        sub = parser.add_subparsers(dest="command")
        sub.add_parser("boom").set_defaults(handler=handler)
        return parser

    return build


def test_ctrl_c_while_the_commands_load_is_one_line(monkeypatch, capsys) -> None:
    """A Ctrl-C during start-up (the subcommand modules import numpy, pyvisa ...)."""

    def interrupted_build_parser():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted_build_parser)
    assert cli.main(["runs"]) == 130
    err = capsys.readouterr().err
    assert err == "nvmlab: interrupted\n"


def test_ctrl_c_at_random_moments_of_start_up_never_shows_a_traceback() -> None:
    """The installed ``nvmlab`` command, interrupted 80-400 ms after it starts (8 tries)."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(7)
    from pathlib import Path

    command = Path(sys.executable).with_name("nvmlab")
    assert command.exists(), command
    for _ in range(8):
        proc = subprocess.Popen(
            [str(command), "emulate", "--help"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        time.sleep(rng.uniform(0.08, 0.4))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        assert proc.returncode in (0, 130, -signal.SIGINT), (proc.returncode, err)
