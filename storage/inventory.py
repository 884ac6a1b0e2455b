"""Chips and stations: what a run is measured on.

A chip must be registered (``nvmlab chip add NAME --kind memristor|eflash --rows R --cols
C``, or :func:`ensure_chip`) before a measurement command records anything on it:
:func:`require_chip` is the check those commands call, and refuses an unknown name with
the command that registers it. :func:`ensure_station` records a station and the identity
of each instrument it used.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from nvmlab.errors import StorageError
from nvmlab.storage.database import Database
from nvmlab.storage.engine import mask_url
from nvmlab.storage.models import ARRAY_KINDS, Chip, Instrument, Station, utcnow


@dataclass(frozen=True)
class RegisteredChip:
    """A chip as registered: id, name, array kind (``memristor`` or ``eflash``), rows,
    cols, and where it came from (lot, wafer, die), notes and registration time (UTC)."""

    id: int
    name: str
    kind: str
    rows: int
    cols: int
    lot: str | None = None
    wafer: str | None = None
    die: str | None = None
    notes: str | None = None
    created_at: dt.datetime | None = None


def _chip(row: Any) -> RegisteredChip:
    return RegisteredChip(
        id=int(row.id), name=row.name, kind=row.array_kind, rows=int(row.n_rows),
        cols=int(row.n_cols), lot=row.lot, wafer=row.wafer, die=row.die, notes=row.notes,
        created_at=row.created_at,
    )  # fmt: skip


def register_chip(
    db: Database,
    name: str,
    *,
    array_kind: str,
    n_rows: int,
    n_cols: int,
    lot: str | None = None,
    wafer: str | None = None,
    die: str | None = None,
    notes: str | None = None,
) -> tuple[RegisteredChip, bool]:
    """Register chip ``name`` unless it is already; return it and whether it is new.

    Registering a chip again with the same kind and size changes nothing; with another
    kind or size it is a :class:`StorageError` (a name names one chip).
    """
    if not name or not name.strip() or name != name.strip():
        raise StorageError(
            f"chip name {name!r}: must be non-empty, without leading or trailing spaces"
        )
    if array_kind not in ARRAY_KINDS:
        raise StorageError(f"chip {name!r}: array_kind {array_kind!r}; allowed: {ARRAY_KINDS}")
    if n_rows <= 0 or n_cols <= 0:
        raise StorageError(f"chip {name!r}: size {n_rows} x {n_cols}; rows and cols must be > 0")
    query = select(Chip.__table__).where(Chip.name == name)
    new_chip = insert(Chip).values(
        name=name, array_kind=array_kind, n_rows=n_rows, n_cols=n_cols,
        lot=lot, wafer=wafer, die=die, notes=notes, created_at=utcnow(),
    ).returning(Chip.id)  # fmt: skip
    with db.errors(f"record chip {name!r}"), db.engine.begin() as conn:
        row = conn.execute(query).first()
        created = False
        if row is None:
            created = _insert_unless_exists(conn, new_chip) is not None
            row = conn.execute(query).one()  # ours, or another process's meanwhile
        if (row.array_kind, row.n_rows, row.n_cols) != (array_kind, n_rows, n_cols):
            raise StorageError(
                f"chip {name!r} is registered as {row.array_kind} {row.n_rows} x {row.n_cols}, "
                f"not {array_kind} {n_rows} x {n_cols}; use another chip name"
            )
        return _chip(row), created


def ensure_chip(
    db: Database,
    name: str,
    *,
    array_kind: str,
    n_rows: int,
    n_cols: int,
    lot: str | None = None,
    wafer: str | None = None,
    die: str | None = None,
    notes: str | None = None,
) -> int:
    """Return the id of chip ``name``, registering it first if it is new.

    An existing chip must match ``array_kind``, ``n_rows`` and ``n_cols``
    (:func:`register_chip`).
    """
    chip, _created = register_chip(
        db, name, array_kind=array_kind, n_rows=n_rows, n_cols=n_cols,
        lot=lot, wafer=wafer, die=die, notes=notes,
    )  # fmt: skip
    return chip.id


def require_chip(db_or_conn: Database | Connection, name: str) -> RegisteredChip:
    """The registered chip ``name``; a :class:`StorageError` naming the command that
    registers it when there is none. Measurement commands call this before recording
    anything on a chip. ``db_or_conn``: the database, or a connection of the caller's
    transaction."""
    query = select(Chip.__table__).where(Chip.name == name)
    if isinstance(db_or_conn, Database):
        with db_or_conn.errors(f"look up chip {name!r}"), db_or_conn.read_connection() as conn:
            row = conn.execute(query).first()
        shown = db_or_conn.display_url
    else:
        row = db_or_conn.execute(query).first()
        shown = mask_url(db_or_conn.engine.url)
    if row is None:
        raise StorageError(
            f"chip {name!r} is not registered in database {shown}; register it first: "
            f"nvmlab chip add {name} --kind {'|'.join(ARRAY_KINDS)} --rows R --cols C"
        )
    return _chip(row)


def list_chips(db: Database) -> list[RegisteredChip]:
    """Every registered chip, by name."""
    with db.errors("list chips"), db.read_connection() as conn:
        rows = conn.execute(select(Chip.__table__).order_by(Chip.name)).all()
    return [_chip(row) for row in rows]


def _insert_unless_exists(conn: Connection, statement: Any) -> int | None:
    """Run an ``INSERT ... RETURNING id`` in a savepoint; ``None`` if a unique key already
    exists (another process inserted the same name between our SELECT and INSERT)."""
    try:
        with conn.begin_nested():
            return int(conn.execute(statement).scalar_one())
    except IntegrityError:
        return None


def ensure_station(
    db: Database,
    name: str,
    *,
    host: str | None = None,
    instruments: Mapping[str, Mapping[str, str | None]] | None = None,
    notes: str | None = None,
) -> int:
    """Return the id of station ``name`` (recorded if new) and store its instruments.

    ``instruments`` maps a role (``"smu"``, ``"chamber"``, ``"board"``) to its identity:
    keys ``manufacturer``, ``model``, ``serial``, ``firmware``, ``resource``. The identity
    of a role is replaced when it changed (an instrument swapped on the bench).
    """
    allowed = {"manufacturer", "model", "serial", "firmware", "resource"}
    with db.errors(f"record station {name!r}"), db.engine.begin() as conn:
        query = select(Station.id).where(Station.name == name)
        station_id = conn.execute(query).scalar()
        if station_id is None:
            station_id = _insert_unless_exists(
                conn,
                insert(Station)
                .values(name=name, host=host, notes=notes, created_at=utcnow())
                .returning(Station.id),
            )
            if station_id is None:  # recorded by another process meanwhile
                station_id = conn.execute(query).scalar_one()
        for role, identity in (instruments or {}).items():
            unknown = set(identity) - allowed
            if unknown:
                raise StorageError(
                    f"station {name!r} instrument {role!r}: unknown fields {sorted(unknown)}; "
                    f"allowed: {sorted(allowed)}"
                )
            values = {key: identity.get(key) for key in allowed}
            existing = conn.execute(
                select(Instrument.id).where(
                    Instrument.station_id == station_id, Instrument.role == role
                )
            ).scalar()
            if existing is None:
                conn.execute(insert(Instrument).values(station_id=station_id, role=role, **values))
            else:
                conn.execute(update(Instrument).where(Instrument.id == existing).values(**values))
        return int(station_id)
