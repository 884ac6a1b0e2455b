"""The typed chip profile: what characterization produces and tuning and analysis read.
Round trips through the database (both engines) and an .npz file; shapes and values are
checked with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nvmlab.errors import StorageError
from nvmlab.storage import ensure_chip, start_run
from nvmlab.storage.profile import (
    DEVICE_ARRAYS,
    ChipProfile,
    list_profiles,
    load_profile,
    save_profile,
)

ROWS, COLS = 4, 6


def _profile(name: str = "W07-D12", kind: str = "memristor") -> ChipProfile:
    rng = np.random.default_rng(7)
    defect = np.zeros((ROWS, COLS), dtype=np.int8)
    defect[1, 2], defect[3, 5] = 1, 2
    set_v = rng.uniform(0.8, 1.4, (ROWS, COLS))
    set_v[defect != 0] = np.nan  # a defective device has no threshold to measure
    return ChipProfile(
        chip=name, kind=kind, rows=ROWS, cols=COLS,
        defect_class=defect,
        set_threshold_v=set_v,
        reset_threshold_v=-rng.uniform(0.6, 1.2, (ROWS, COLS)),
        temp_coeff_s_per_k=rng.normal(2e-8, 5e-9, (ROWS, COLS)),
        read_noise_sigma_s=rng.uniform(1e-8, 5e-8, (ROWS, COLS)),
        forming_voltage_v=rng.uniform(2.0, 3.0, (ROWS, COLS)),
        safe_read_v=0.2, amplitude_cap_half_select_v=1.6, amplitude_cap_third_select_v=2.2,
        meta={"nplc": 1.0, "temperature_c": 25.0},
    )  # fmt: skip


def _assert_same(a: ChipProfile, b: ChipProfile) -> None:
    assert (a.chip, a.kind, a.rows, a.cols) == (b.chip, b.kind, b.rows, b.cols)
    for name in DEVICE_ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
    assert a.scalars() == b.scalars()
    assert a.meta == b.meta


def test_round_trip_through_the_database(db) -> None:
    chip_id = ensure_chip(db, "W07-D12", array_kind="memristor", n_rows=ROWS, n_cols=COLS)
    run = start_run(db, "characterize", chip_id=chip_id)
    profile = _profile()
    assert profile.iv_nonlinearity is None  # not measured: stays absent
    first = save_profile(db, profile, run_id=run)
    back = load_profile(db, "W07-D12")
    _assert_same(profile, back)
    assert (back.profile_id, back.run_id) == (first, run)
    assert back.defect_class is not None and back.defect_class.dtype == np.int8
    # A newer profile becomes the default; the older stays readable by id.
    newer = _profile()
    newer.safe_read_v = 0.15
    second = save_profile(db, newer)
    assert load_profile(db, "W07-D12").safe_read_v == 0.15
    assert load_profile(db, "W07-D12", profile_id=first).safe_read_v == 0.2
    assert [p["id"] for p in list_profiles(db, "W07-D12")] == [second, first]


def test_round_trip_through_an_npz_file(tmp_path: Path) -> None:
    profile = _profile(kind="eflash")
    path = tmp_path / "profile.npz"
    profile.to_npz(path)
    _assert_same(profile, ChipProfile.from_npz(path))
    with np.load(path, allow_pickle=False) as data:  # plain arrays, readable without nvmlab
        assert data["set_threshold_v"].shape == (ROWS, COLS)


def test_saving_needs_the_chip_registered_with_the_same_kind_and_size(db) -> None:
    with pytest.raises(StorageError, match="chip 'W07-D12' is not registered .*nvmlab chip add"):
        save_profile(db, _profile())
    ensure_chip(db, "W07-D12", array_kind="memristor", n_rows=ROWS, n_cols=COLS + 1)
    with pytest.raises(StorageError) as info:
        save_profile(db, _profile())
    assert str(info.value) == (
        f"profile of chip 'W07-D12' is memristor {ROWS} x {COLS}, but the chip is registered "
        f"as memristor {ROWS} x {COLS + 1}"
    )


def test_loading_a_chip_without_profile_or_an_unknown_id_is_clear(db) -> None:
    ensure_chip(db, "bare", array_kind="eflash", n_rows=2, n_cols=2)
    with pytest.raises(StorageError, match="chip 'bare' has no stored profile; characterize it"):
        load_profile(db, "bare")
    with pytest.raises(StorageError, match="no profile 999 of chip 'bare'"):
        load_profile(db, "bare", profile_id=999)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows": 0}, "ChipProfile.rows = 0; must be an integer > 0"),
        ({"kind": "rram"}, "ChipProfile.kind = 'rram'; allowed: memristor, eflash"),
        ({"chip": ""}, "ChipProfile.chip = ''; must be a non-empty chip name"),
        (
            {"set_threshold_v": np.ones((COLS, ROWS))},
            f"ChipProfile.set_threshold_v has shape ({COLS}, {ROWS}); expected (rows, cols) = "
            f"({ROWS}, {COLS})",
        ),
        (
            {"set_threshold_v": np.full((ROWS, COLS), np.inf)},
            "ChipProfile.set_threshold_v holds infinite values; allowed: finite, or NaN where "
            "not measured",
        ),
        (
            {"set_threshold_v": -np.ones((ROWS, COLS))},
            "ChipProfile.set_threshold_v holds values <= 0 V; a set threshold is positive",
        ),
        (
            {"reset_threshold_v": np.ones((ROWS, COLS))},
            "ChipProfile.reset_threshold_v holds values >= 0 V; a reset threshold is negative",
        ),
        (
            {"read_noise_sigma_s": -np.ones((ROWS, COLS))},
            "ChipProfile.read_noise_sigma_s holds values < 0 S; a standard deviation is >= 0",
        ),
        (
            {"defect_class": np.full((ROWS, COLS), 3)},
            "ChipProfile.defect_class holds 3; allowed: 0 functional, 1 stuck-off, 2 stuck-on, -1 not measured",
        ),
        (
            {"defect_class": np.full((ROWS, COLS), 0.5)},
            "ChipProfile.defect_class holds non-integer values; allowed: -1, 0, 1, 2",
        ),
        (
            {"forming_voltage_v": np.full((ROWS, COLS), "x")},
            "ChipProfile.forming_voltage_v has dtype <U1; expected real numbers",
        ),
        ({"safe_read_v": -0.2}, "ChipProfile.safe_read_v = -0.2 V; must be a finite number > 0"),
        (
            {"amplitude_cap_half_select_v": float("nan")},
            "ChipProfile.amplitude_cap_half_select_v = nan V; must be a finite number > 0",
        ),
    ],  # fmt: skip
)
def test_invalid_profiles_are_refused_naming_the_field(change: dict, message: str) -> None:
    fields = {**_profile().__dict__, **change}
    fields.pop("profile_id"), fields.pop("run_id")
    with pytest.raises(StorageError) as info:
        ChipProfile(**fields)
    assert str(info.value) == message


def test_a_file_that_is_not_a_profile_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.npz"
    np.savez(plain, conductance_s=np.ones((2, 2)))
    with pytest.raises(StorageError, match=f"{plain} is not an nvmlab chip profile"):
        ChipProfile.from_npz(plain)
    with pytest.raises(StorageError, match="cannot read chip profile .*missing.npz"):
        ChipProfile.from_npz(tmp_path / "missing.npz")
    profile = _profile()
    path = tmp_path / "p.npz"
    profile.to_npz(path)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["surprise"] = np.zeros((ROWS, COLS))
    np.savez(path, **arrays)
    with pytest.raises(StorageError, match="unknown arrays \\['surprise'\\]; allowed:"):
        ChipProfile.from_npz(path)
