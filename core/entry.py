"""The ``nvmlab`` console script: a Ctrl-C at any moment of start-up is one line.

Importing the command line loads numpy, pyvisa and SQLAlchemy (a few hundred ms). This
module imports nothing heavy itself and installs a quiet SIGINT handler before it does.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
    print("nvmlab: interrupted", file=sys.stderr)
    raise SystemExit(130)


def run() -> int:
    """Entry point of the ``nvmlab`` console script."""
    previous = signal.signal(signal.SIGINT, _interrupted)
    try:
        from nvmlab.cli import main
    finally:
        signal.signal(signal.SIGINT, previous)
    return main()


if __name__ == "__main__":
    sys.exit(run())
