"""The README's first command: a conductance map read on the emulated bench and stored."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from nvmlab.cli import main
from nvmlab.storage.database import open_database


@pytest.mark.parametrize("smu", ["keithley2400", "keithley2636b", "keysight_b2902a"])
def test_demo_reads_every_device_and_stores_the_map(tmp_path, capsys, smu: str) -> None:
    url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    assert (
        main(["demo", "--rows", "8", "--cols", "8", "--seed", "3", "--smu", smu, "--db", url]) == 0
    )
    out = capsys.readouterr().out
    assert "status completed" in out

    db = open_database(url, create=False)
    with db.read_connection() as conn:
        runs = conn.execute(text("SELECT id, status FROM runs")).all()
        reads = conn.execute(text("SELECT row, col, conductance_s FROM reads")).all()
    db.close()
    assert [status for _, status in runs] == ["completed"]
    assert len(reads) == 64
    assert {(r, c) for r, c, _ in reads} == {(r, c) for r in range(8) for c in range(8)}
    conductances = np.array([g for *_, g in reads])
    # A memristor crossbar's working window, with a few stuck devices at the extremes.
    assert 5e-6 < np.median(conductances) < 100e-6


def test_demo_on_an_unwritable_database_fails_cleanly(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x' / 'demo.sqlite'}"
    assert main(["demo", "--rows", "4", "--cols", "4", "--db", url]) != 0
    assert "error" in capsys.readouterr().err
