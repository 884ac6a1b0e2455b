"""``nvmlab station check``: is every instrument of a station file there and answering?"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nvmlab.errors import ConfigError

CHECK_EPILOG = """\
what it does:
  1. reads and validates STATION.toml (every problem is listed with the field, the value
     and what is allowed; nothing is opened if the file is wrong)
  2. opens each instrument (VISA resource or pyserial URL) and asks who it is; what
     answers must be the model its driver names (a 2636B driver on a 2400, or the SMU
     entry on the probe board's port, is a FAILED row naming what answered), and the
     probe board's array must be the file's [station] array
  3. prints one row per instrument: role, model, resource, identity, status
It changes nothing on the bench: no output is switched, no setpoint written.

exit status:
  0  every instrument answered and is the model its driver names
  1  at least one instrument failed or is another model (its row says FAILED and why)
  2  the station file is invalid or unreadable

examples:
  nvmlab station check examples/station-lab.toml
  nvmlab station check station.toml --backend @ivi      # a vendor VISA (NI, Keysight)
  nvmlab emulate --station-out bench-station.toml &     # an emulated bench over TCP
  nvmlab station check bench-station.toml
"""


def register(subparsers: Any) -> None:
    """Add ``nvmlab station ...`` to the ``nvmlab`` command line."""
    station = subparsers.add_parser(
        "station",
        help="check a station file and the instruments it names",
        description="Work with station files: the instruments of a bench and its safety limits.",
    )
    station_sub = station.add_subparsers(dest="station_command", metavar="SUBCOMMAND")
    check = station_sub.add_parser(
        "check",
        help="connect to every instrument of a station file, identify it, print a table",
        description=(
            "Connect to every instrument named in STATION.toml, identify it, and print a table "
            "(role, model, resource, identity, status)."
        ),
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("station_file", metavar="STATION.toml", help="the station file to check")
    check.add_argument(
        "--backend",
        metavar="VISA",
        default=None,
        help="VISA backend for every VISA resource, overriding the file ('@py' = pyvisa-py, "
        "'@ivi' = the installed vendor VISA); serial URLs are not affected",
    )
    check.set_defaults(handler=check_station)
    station.set_defaults(handler=lambda args: _help(station))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def format_table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def check_station(args: argparse.Namespace) -> int:
    """Handler of ``nvmlab station check``; returns the exit status."""
    from nvmlab.instruments.station import Station, load_station_file

    try:
        config = load_station_file(args.station_file)
    except ConfigError as exc:
        print(f"nvmlab: error: {exc}", file=sys.stderr)
        return 2
    station = Station(config, visa_library=args.backend)
    try:
        statuses = station.check()
    finally:
        station.close(safe=False)
    rows = [[s.role, s.model, s.resource, s.identity or "-", s.status] for s in statuses]
    print(f"station '{config.name}' ({config.source})")
    print(format_table(rows, ["role", "model", "resource", "identity", "status"]))
    failed = [s for s in statuses if not s.ok]
    if failed:
        names = ", ".join(f"{s.role} ({s.resource})" for s in failed)
        print(
            f"nvmlab: error: {len(failed)} of {len(statuses)} instruments failed: {names}",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(statuses)} instruments answered")
    return 0
