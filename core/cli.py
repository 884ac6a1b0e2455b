"""The ``nvmlab`` command line.

Each layer contributes its subcommands through a ``register(subparsers)`` function in its
own ``cli`` module; this module only assembles them and turns nvmlab errors into a clear
message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from nvmlab import __version__
from nvmlab.errors import NvmlabError
from nvmlab.masking import mask_passwords

#: Modules that provide ``register(subparsers)``; a missing one is simply not offered.
SUBCOMMAND_MODULES = (
    "nvmlab.mocks.cli",
    "nvmlab.mocks.truth",
    "nvmlab.instruments.cli",
    "nvmlab.storage.cli",
    "nvmlab.characterization.cli",
    "nvmlab.tuning.cli",
    "nvmlab.jobs.cli",
    "nvmlab.jobs.monitor",
    "nvmlab.analysis.cli",
    "nvmlab.demo",
    "nvmlab.benchmarks",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvmlab",
        description=(
            "Characterize and tune analog non-volatile memory arrays (memristor crossbars, "
            "eFlash) on a real or emulated bench. Run 'nvmlab COMMAND --help' for details."
        ),
    )
    parser.add_argument("--version", action="version", version=f"nvmlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def _build_parser_uninterrupted() -> argparse.ArgumentParser | None:
    """:func:`build_parser`, with Ctrl-C held back while it imports the subcommands' modules
    (numpy, pyvisa, SQLAlchemy ...: an interrupt inside a C extension's import surfaces as
    an ImportError and a traceback); None when Ctrl-C was pressed meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        return build_parser()
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        parser = build_parser()
    finally:
        signal.signal(signal.SIGINT, previous)
    return None if pressed else parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _build_parser_uninterrupted()
        if parser is None:
            raise KeyboardInterrupt
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return 2
        return int(handler(args) or 0)
    except NvmlabError as exc:
        print(f"nvmlab: error: {mask_passwords(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nvmlab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: show it, with every password masked
        trace = "".join(traceback.format_exception(exc))
        print(mask_passwords(trace), file=sys.stderr, end="")
        print(
            f"nvmlab: error: unexpected {type(exc).__name__} (traceback above, passwords "
            "masked); please report it",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
