"""Large SQLite reads as Arrow, through the ADBC SQLite driver in a child process.

Loading a 1,000,000-record run through Python's ``sqlite3`` builds ten million Python
objects (one per value) before numpy sees them. The ADBC SQLite driver (``adbc-driver-sqlite``) reads rows straight into Arrow columns in
C; ``python -P -m nvmlab.storage.bench`` prints both paths side by side.

Why a child process
-------------------
The ADBC driver links its *own* copy of the SQLite library. Two SQLite copies in one
process break SQLite's locking (https://www.sqlite.org/howtocorrupt.html, section 2.2.1):
POSIX advisory locks belong to the process, so when the ADBC copy closes its file
descriptor the kernel drops every lock this process holds on the file, including the
write lock of a :class:`~nvmlab.storage.writer.RecordWriter` flushing in another thread.
Another process may then write at the same time, and the database is corrupted
(``tests/storage/test_query_cli.py`` shows the lock surviving the load). Run in a child
process, the driver holds and drops only its own locks.

The child (this file run as a script, so that it imports only pyarrow and the driver)
opens the file read-only (``mode=ro``), runs one SELECT (one snapshot),
and streams the result to its stdout in the Arrow IPC format; the parent reads the
stream with pyarrow. Column types are inferred by the driver from the whole result (one
batch), so leading NULLs cannot fix a column to the wrong type.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

#: Rows per Arrow batch in the child: the whole result, so the driver infers every
#: column's type from all its values (its default, 1024, infers from the first batch and
#: fails on "expected INT64 but got DOUBLE" after 1024 leading NULLs).
BATCH_ROWS = 1 << 30


class ArrowReadError(Exception):
    """The child could not run the query (its stderr is the message)."""


def read_arrow(uri: str, sql: str) -> pa.Table:
    """Run ``sql`` on the SQLite database at ``uri`` (a ``file:`` URI) in a child process."""
    command = [sys.executable, "-P", str(Path(__file__).resolve()), uri, sql]
    # Collecting stdout whole and reading the stream from memory (zero copy) measured
    # faster than reading the pipe through a Python file object.
    child = subprocess.run(command, capture_output=True, check=False)
    if child.returncode != 0:
        error = child.stderr.decode(errors="replace").strip()
        raise ArrowReadError(error or f"SQLite Arrow reader exited with {child.returncode}")
    return pyarrow.ipc.open_stream(pa.py_buffer(child.stdout)).read_all()


def _child_main(uri: str, sql: str) -> int:
    import adbc_driver_manager
    import adbc_driver_sqlite

    try:
        with (
            adbc_driver_sqlite.connect(uri) as database,
            adbc_driver_manager.AdbcConnection(database) as connection,
            adbc_driver_manager.AdbcStatement(connection) as statement,
        ):
            statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
            statement.set_sql_query(sql)
            stream, _ = statement.execute_query()
            reader = pa.RecordBatchReader._import_from_c(stream.address)
            with pyarrow.ipc.new_stream(sys.stdout.buffer, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
    except adbc_driver_manager.Error as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1], sys.argv[2]))
