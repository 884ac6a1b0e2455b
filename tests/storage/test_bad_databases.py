"""Databases nvmlab must not write: a read-only archive, a schema of another revision.

Every command that opens a database (``runs``, ``export``, ``db current``, ``demo``) gets
the same treatment: reading works where it can, writing fails with one clear line and a
non-zero exit, and the file is byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from nvmlab.cli import main
from nvmlab.storage import RecordWriter, ensure_chip, finish_run, open_database, start_run
from nvmlab.storage.database import head_revision

NVMLAB = [sys.executable, "-P", "-m", "nvmlab.cli"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store_one_run(url: str) -> int:
    db = open_database(url)
    chip = ensure_chip(db, "archived", array_kind="eflash", n_rows=4, n_cols=4)
    run = start_run(db, "retention", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w:
        w.add_read(1, 2, 0.2, 3e-6, temperature_c=125.0)
    finish_run(db, run, "completed")
    db.close()
    return run


@pytest.fixture
def archive_dir() -> Iterator[Path]:
    """A directory whose modes the test changes (restored before removal)."""
    folder = Path(tempfile.mkdtemp(prefix="nvmlab-archive-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in (folder, *folder.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(folder)


def _as_unprivileged(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as a process that may read everything but write only where file modes
    allow (root ignores them).

    As root the child keeps user id 0 but loses every capability except
    ``CAP_DAC_READ_SEARCH`` (``setpriv`` empties the bounding set but for it): without
    ``CAP_DAC_OVERRIDE`` the kernel checks the owner bits of the root-owned files, so a
    0444 file in a 0555 folder cannot be written, while the checkout, its ``.venv`` and
    the interpreter stay readable wherever they live and whoever owns them (a clone in a
    private 0700 folder, which user ``nobody`` could not even enter). As an ordinary user
    the child runs as that user.
    """
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's capabilities for this test"
        argv = [setpriv, "--bounding-set=-all,+dac_read_search", "--inh-caps=-all",
                "--ambient-caps=-all", *argv]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=120)


def test_the_unprivileged_child_really_cannot_write_the_archive(archive_dir: Path) -> None:
    """The premise of the read-only test: the child is refused by the kernel, not by nvmlab."""
    path = archive_dir / "f"
    path.write_text("x")
    path.chmod(0o444)
    archive_dir.chmod(0o555)
    probe = _as_unprivileged(
        [sys.executable, "-P", "-c",
         "import os, sys\n"
         "print(os.access(sys.argv[1], os.W_OK))\n"
         "for target, mode in ((sys.argv[1], 'a'), (sys.argv[1] + '.new', 'w')):\n"
         "    try:\n        open(target, mode)\n        print('written')\n"
         "    except PermissionError:\n        print('refused')\n"
         "import nvmlab.storage\nprint('imported')", str(path)]
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["False", "refused", "refused", "imported"]


def test_a_read_only_archive_is_read_and_never_written(archive_dir: Path) -> None:
    """A WAL database on a read-only share (file 0444, directory 0555): listing and export
    work, every write is refused with one line naming the file, nothing changes."""
    path = archive_dir / "2025-retention.sqlite"
    url = f"sqlite:///{path}"
    run = _store_one_run(url)
    out = archive_dir / "export"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    path.chmod(0o444)
    archive_dir.chmod(0o555)
    digest = _digest(path)

    listed = _as_unprivileged([*NVMLAB, "runs", "--db", url])
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:4] == [str(run), "retention", "completed",
                                                         "archived"]  # fmt: skip
    exported = _as_unprivileged(
        [*NVMLAB, "export", str(run), "--format", "parquet", "--out", str(out), "--db", url]
    )
    assert exported.returncode == 0, exported.stderr
    assert (out / f"run-{run}" / "reads.parquet").exists()
    current = _as_unprivileged([*NVMLAB, "db", "current", "--db", url])
    assert current.returncode == 0 and "(current)" in current.stdout

    demo = _as_unprivileged([*NVMLAB, "demo", "--rows", "4", "--cols", "4", "--db", url])
    assert demo.returncode == 1
    assert (
        demo.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"nvmlab: error: cannot record chip 'emulated-memristor-4x4-seed0': database {url} "
            "is read-only"
        )
    )
    writer = _as_unprivileged(
        [sys.executable, "-P", "-c",
         "import sys\nfrom nvmlab.storage import open_database, start_run\n"
         "start_run(open_database(sys.argv[1]), 'more')", url]
    )  # fmt: skip
    assert writer.returncode == 1
    assert "StorageError: cannot start a 'more' run: database" in writer.stderr
    assert "is read-only" in writer.stderr and "nothing was stored or changed" in writer.stderr
    assert _digest(path) == digest
    assert sorted(p.name for p in archive_dir.iterdir()) == ["2025-retention.sqlite", "export"]


COMMANDS = [
    ["runs"],
    ["export", "1", "--out", "OUT"],
    ["db", "current"],
    ["demo", "--rows", "4", "--cols", "4"],
]


@pytest.mark.parametrize(
    "command", COMMANDS, ids=lambda c: c[0] + (f" {c[1]}" if c[0] == "db" else "")
)
def test_every_command_asks_to_upgrade_an_older_database(
    command: list[str], tmp_path: Path, at_first_revision, capsys
) -> None:
    """The lab's file is still at revision 0001 (nvmlab's first release)."""
    path = tmp_path / "lab.sqlite"
    url = f"sqlite:///{path}"
    at_first_revision(url)
    digest = _digest(path)
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    assert main([*argv, "--db", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"nvmlab: error: database {url} is at schema revision 0001, this nvmlab needs "
        f"{head_revision()}; run 'nvmlab db upgrade --db {url}'"
    ]
    assert _digest(path) == digest and not (tmp_path / "out").exists()
    # Doing what the message says makes the command work again.
    assert main(["db", "upgrade", "--db", url]) == 0
    assert f"upgraded from schema revision 0001 to {head_revision()}" in capsys.readouterr().out
    assert main([*argv, "--db", url]) == 0


@pytest.mark.parametrize(
    "command", COMMANDS, ids=lambda c: c[0] + (f" {c[1]}" if c[0] == "db" else "")
)
def test_every_command_refuses_a_database_from_a_newer_nvmlab(
    command: list[str], db, tmp_path: Path, capsys
) -> None:
    url = db.url.render_as_string(hide_password=False)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0009'"))
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    assert main([*argv, "--db", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is at schema revision 0009, newer than this nvmlab" in err[0]
    assert err[0].endswith("; upgrade nvmlab")
    with db.read_connection() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 0
    assert not (tmp_path / "out").exists()
