"""Database URLs written in files: a relative SQLite path means the file's own folder.

Both the station file (``nvmlab.instruments``) and the storage commands' ``--station``
option (``nvmlab.storage``) read a station file's ``database`` key; this core module holds
the one rule they share.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["resolve_sqlite_path"]

_SQLITE_URL = re.compile(
    r"^(?P<scheme>sqlite(?:\+[A-Za-z0-9_]+)?:///)(?P<path>[^?]*)(?P<query>\?.*)?$"
)
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[/\\]")


def resolve_sqlite_path(url: str, folder: Path | None) -> str:
    """``url`` with a relative SQLite file path made absolute against ``folder``.

    ``sqlite:///lab.sqlite`` -> ``sqlite:////<folder>/lab.sqlite``; absolute paths
    (``sqlite:////srv/lab.sqlite``), in-memory databases (``sqlite://``,
    ``sqlite:///:memory:``), ``file:`` URIs and other databases are returned unchanged,
    as is everything when ``folder`` is None.
    """
    match = _SQLITE_URL.match(url)
    if folder is None or match is None:
        return url
    path = match["path"]
    if (
        not path
        or path == ":memory:"
        or path.startswith(("/", "file:"))
        or _WINDOWS_ABSOLUTE.match(path)
    ):
        return url
    return f"{match['scheme']}{(folder / path).as_posix()}{match['query'] or ''}"
