"""Writing results: chips, stations, runs, units (attempts) and the buffered record writer.

This module gathers the writing API under one name; each part lives in its own module:

* :mod:`nvmlab.storage.inventory`: chips and stations (``ensure_chip``, ``require_chip``,
  ``list_chips``, ``ensure_station``);
* :mod:`nvmlab.storage.runs`: run lifecycle and resume (``start_run``, ``finish_run``,
  ``resume_run``, ``completed_units``, ``mark_interrupted``, ``unit_attempts``);
* :mod:`nvmlab.storage.writer`: the buffered :class:`RecordWriter` and its unit attempts;
* :mod:`nvmlab.storage.bulk`: the per-engine bulk insert paths and the buffered columns.
"""

from __future__ import annotations

from nvmlab.storage.bulk import BULK_TABLES, COLUMNS
from nvmlab.storage.inventory import (
    RegisteredChip,
    ensure_chip,
    ensure_station,
    list_chips,
    register_chip,
    require_chip,
)
from nvmlab.storage.runs import (
    completed_units,
    finish_run,
    mark_interrupted,
    resume_chain,
    resume_run,
    start_run,
    unit_attempts,
)
from nvmlab.storage.writer import RecordWriter, UnitAttempt

__all__ = [
    "BULK_TABLES",
    "COLUMNS",
    "RecordWriter",
    "RegisteredChip",
    "UnitAttempt",
    "completed_units",
    "ensure_chip",
    "ensure_station",
    "finish_run",
    "list_chips",
    "mark_interrupted",
    "register_chip",
    "require_chip",
    "resume_chain",
    "resume_run",
    "start_run",
    "unit_attempts",
]
