"""The ``[station] database`` key of a station file, read by storage itself.

The storage commands take ``--station FILE`` and use that file's database when neither
``--db`` nor ``NVMLAB_DB`` names one (:func:`nvmlab.storage.engine.resolve_database`).
Storage may import only the core, not ``nvmlab.instruments``, so it reads this one key
with ``tomllib`` here; the rest of the file is the instruments layer's to validate. A
relative SQLite path is resolved against the station file's folder exactly as
``StationConfig.database_url`` does (``instruments/stationfile.py``): ``sqlite:///lab.sqlite``
in ``/lab/station.toml`` names ``/lab/lab.sqlite`` from any working folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nvmlab.dburl import resolve_sqlite_path
from nvmlab.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def station_file_database(path: str | Path) -> str | None:
    """The database URL of station file ``path`` (``[station] database``), a relative
    SQLite path made absolute against the file's folder; None when the key is absent.

    Raises :class:`~nvmlab.errors.ConfigError` naming the file and the field when the file
    cannot be read, is not TOML, or the key is not a non-empty string.
    """
    source = str(path)
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot be read: {exc.strerror or exc}", file=source, field="file"
        ) from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 text ({exc.reason})", file=source, field="file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(exc), file=source, field="TOML syntax") from None
    header = data.get("station", {})
    if not isinstance(header, dict):
        raise ConfigError(
            f"must be a table ([station]), got {header!r} ({type(header).__name__})",
            file=source,
            field="station",
        )
    if "database" not in header:
        return None
    value = header["database"]
    if not isinstance(value, str):
        raise ConfigError(
            f"must be a string (a database URL such as sqlite:///nvmlab.sqlite), got {value!r} "
            f"({type(value).__name__})",
            file=source,
            field="station.database",
        )
    if not value.strip():
        raise ConfigError("must not be empty", file=source, field="station.database")
    return resolve_sqlite_path(value, Path(path).resolve().parent)


__all__ = ["resolve_sqlite_path", "station_file_database"]
