"""The chip is non-volatile and reproducible: state files and seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nvmlab.errors import ConfigError
from nvmlab.mocks.physics import create_array
from nvmlab.mocks.physics.base import ArrayPhysics, LineBias, scheme_bias
from nvmlab.mocks.physics.eflash import EflashArray
from nvmlab.mocks.physics.memristor import MemristorArray


def used_memristor(seed: int = 1) -> MemristorArray:
    """A chip with a history: pulses, relaxation, a non-default parameter."""
    array = create_array("memristor", 8, 8, seed=seed, params={"rtn_fraction": 0.2})
    assert isinstance(array, MemristorArray)
    for r, c, amp in ((1, 2, 1.3), (3, 3, -1.4), (5, 0, 1.1)):
        array.stress(scheme_bias(8, 8, r, c, amp, "v/2"), 1.1e-3, 25.0)
    array.relax(3600.0, 60.0)
    return array


def assert_same_truth(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_memristor_state_file_round_trip_restores_the_chip_exactly(tmp_path: Path) -> None:
    original = used_memristor()
    path = tmp_path / "chip.npz"
    original.save_state(path)
    # a chip built from another seed and default parameters becomes the saved one
    restored = MemristorArray(8, 8, seed=99)
    restored.load_state(path)
    assert_same_truth(original.ground_truth(), restored.ground_truth())
    assert restored.params == original.params
    # ... and behaves identically from here on: noise, telegraph flips, switching
    bias = LineBias.grounded(8, 8)
    bias.row_v[1] = 0.2
    for chip in (original, restored):
        chip.relax(10.0, 25.0)
        chip.stress(scheme_bias(8, 8, 4, 4, 1.2, "v/2"), 1.1e-3, 25.0)
    np.testing.assert_array_equal(
        original.solve(bias, 40.0).col_i, restored.solve(bias, 40.0).col_i
    )
    assert_same_truth(original.ground_truth(), restored.ground_truth())
    assert [p.name for p in tmp_path.iterdir()] == ["chip.npz"]  # no temporary left behind


def test_eflash_state_file_round_trip(tmp_path: Path) -> None:
    original = EflashArray(4, 6, seed=3)
    original.stress(original.pulse_bias(1, 1, 4.6, "v/2"), 2e-6, 25.0)
    original.stress(original.pulse_bias(2, 5, -10.0, "v/2"), 1e-3, 25.0)
    original.relax(86400.0, 85.0)
    original.save_state(tmp_path / "flash.npz")
    restored = EflashArray(4, 6, seed=0)
    restored.load_state(tmp_path / "flash.npz")
    assert_same_truth(original.ground_truth(), restored.ground_truth())
    np.testing.assert_array_equal(
        original.solve(original.read_bias(), 25.0).col_i,
        restored.solve(restored.read_bias(), 25.0).col_i,
    )


def test_saving_replaces_the_file_atomically_and_a_failed_write_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chip.npz"
    chip = used_memristor()
    chip.save_state(path)
    saved = path.read_bytes()
    chip.stress(scheme_bias(8, 8, 0, 0, 1.5, "v/2"), 1.1e-3, 25.0)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        chip.save_state(path)
    assert path.read_bytes() == saved  # the old state is intact
    assert [p.name for p in tmp_path.iterdir()] == ["chip.npz"]


def test_a_bench_opening_its_state_file_removes_temporaries_of_a_killed_writer(
    tmp_path: Path,
) -> None:
    from nvmlab.clock import VirtualClock
    from nvmlab.mocks.thermal import ThermalModel
    from nvmlab.mocks.world import Bench

    path = tmp_path / "chip.npz"
    chip = used_memristor()
    chip.save_state(path)
    # What a process killed between writing the temporary and renaming it leaves behind.
    (tmp_path / ".chip.npz.k1ll3d.tmp").write_bytes(b"half a state file")
    (tmp_path / ".other.npz.x.tmp").write_bytes(b"not ours")
    clock = VirtualClock()
    bench = Bench(MemristorArray(8, 8, seed=99), clock, ThermalModel(clock), state_file=path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npz.x.tmp", "chip.npz"]
    bench_truth = bench.ground_truth()
    assert bench_truth.pop("clock_s") == clock.now()
    assert_same_truth(bench_truth, chip.ground_truth())


def test_a_state_file_of_another_chip_is_refused_with_its_name(tmp_path: Path) -> None:
    used_memristor().save_state(tmp_path / "chip.npz")
    with pytest.raises(ConfigError, match=r"chip\.npz.*memristor array of 8 x 8.*16 x 16"):
        MemristorArray(16, 16).load_state(tmp_path / "chip.npz")
    with pytest.raises(ConfigError, match=r"chip\.npz.*this bench has a eflash"):
        EflashArray(8, 8).load_state(tmp_path / "chip.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a state file")
    with pytest.raises(ConfigError, match=r"junk\.npz.*cannot read chip state file"):
        MemristorArray(8, 8).load_state(tmp_path / "junk.npz")


@pytest.mark.parametrize("kind", ["memristor", "eflash"])
def test_same_seed_gives_the_same_chip_and_another_seed_another(kind: str) -> None:
    a = create_array(kind, 16, 16, seed=5).ground_truth()
    b = create_array(kind, 16, 16, seed=5).ground_truth()
    c = create_array(kind, 16, 16, seed=6).ground_truth()
    assert_same_truth(a, b)
    key = "set_threshold_v" if kind == "memristor" else "vth_v"
    assert not np.array_equal(a[key], c[key])


def test_noise_draws_do_not_change_the_chip() -> None:
    """Reading a chip many times (noise stream) leaves its device parameters as drawn."""
    quiet = MemristorArray(8, 8, seed=5)
    noisy = MemristorArray(8, 8, seed=5)
    bias = LineBias.grounded(8, 8)
    bias.row_v[:] = 0.2
    for _ in range(50):
        noisy.solve(bias, 25.0, noise=True)
    assert_same_truth(quiet.ground_truth(), noisy.ground_truth())


@pytest.mark.parametrize("kind", ["memristor", "eflash", "resistor"])
def test_every_kind_implements_the_array_physics_contract(kind: str) -> None:
    array = create_array(kind, 3, 4, seed=1)
    assert isinstance(array, ArrayPhysics)
    assert (array.kind, array.rows, array.cols) == (kind, 3, 4)
    solution = array.solve(LineBias.grounded(3, 4), 25.0)
    assert solution.col_i.shape == (4,) and solution.row_i.shape == (3,)
    assert solution.device_i.shape == (3, 4)
