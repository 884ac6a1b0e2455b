"""Targets of an array tune (tuning/targets.py): tables, pairs, refusals before any pulse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nvmlab.errors import ConfigError
from nvmlab.tuning.targets import load_table, load_target_set, weights_to_pairs


def test_csv_and_npy_tables_with_nan(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("# targets (S)\n1e-5,2e-5\n,nan\n")
    table = load_table(csv)
    assert table.shape == (2, 2) and table[0, 1] == 2e-5 and np.isnan(table[1]).all()
    np.save(tmp_path / "t.npy", table)
    np.testing.assert_array_equal(load_table(tmp_path / "t.npy"), table)


def test_weights_map_to_adjacent_column_pairs_in_the_window(tmp_path: Path) -> None:
    w = np.array([[1.0, -0.5], [0.0, np.nan]])
    tset = weights_to_pairs(w, (10e-6, 100e-6))
    g = tset.targets_s
    assert g.shape == (2, 4)
    diff = g[:, 0::2] - g[:, 1::2]
    np.testing.assert_allclose(diff[0], [90e-6, -45e-6])
    assert diff[1, 0] == 0 and np.isnan(g[1, 2:]).all()
    assert np.nanmin(g) >= 10e-6 and np.nanmax(g) <= 100e-6
    # a stuck G+ at 50 uS: G- re-aimed at 50 - 90 uS leaves the window; a stuck G- of
    # the negative weight at 70 uS: G+ = 70 - 45 = 25 uS
    assert tset.compensate(0, 0, 50e-6) is None
    r2, c2, new = tset.compensate(0, 3, 70e-6)  # type: ignore[misc]
    assert (r2, c2) == (0, 2) and new == pytest.approx(25e-6)


@pytest.mark.parametrize(
    "content,needle",
    [
        ("1e-5,2e-5\n3e-5,4e-5\n", "allowed: the chip's 2 x 3"),  # wrong shape
        ("1e-5,-2e-5,1e-5\n3e-5,4e-5,1e-5\n", "-2e-05"),  # negative
        ("1e-5,2e-5,1e-5\n3e-5,4e-3,1e-5\n", "beyond what the devices"),  # unreachable
        ("1e-5,abc,1e-5\n3e-5,4e-5,1e-5\n", "'abc' is not a number"),  # not a table
        ("1e-5,2e-5\n3e-5,4e-5,1e-5\n", "is not a table"),  # ragged
    ],
)
def test_bad_targets_refused_naming_file_and_value(
    tmp_path: Path, content: str, needle: str
) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_target_set({"targets": str(f)}, 2, 3)
    assert needle in str(err.value) and "bad.csv" in str(err.value)


def test_binary_junk_and_wrong_weight_shape_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x00\x01 not numpy")
    with pytest.raises(ConfigError, match="junk.npy"):
        load_table(junk)
    w = tmp_path / "w.npy"
    np.save(w, np.ones((4, 3)))
    with pytest.raises(ConfigError, match="allowed: 4 x 4"):
        load_target_set({"weights": str(w), "window": [10e-6, 100e-6]}, 4, 8)
    with pytest.raises(ConfigError, match="window"):
        load_target_set({"weights": str(w), "window": [100e-6, 10e-6]}, 4, 6)
