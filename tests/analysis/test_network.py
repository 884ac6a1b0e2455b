"""Networks and data from local files only: the built-in benchmark (seeded, cached, no
download), a user's NPZ network with NPZ data, a local CIFAR-10 copy; clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from nvmlab.analysis.impact import load_network
from nvmlab.analysis.network import (
    digits_benchmark,
    load_cifar10,
    load_network_npz,
    save_network_npz,
)
from nvmlab.errors import ConfigError


def test_the_benchmark_is_trained_once_seeded_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVMLAB_CACHE", str(tmp_path))
    net, x, y = digits_benchmark(seed=0)
    assert net.weights[0].shape == (64, 32) and net.weights[1].shape == (32, 10)
    assert net.accuracy(x, y) >= 0.95 and x.min() >= 0.0 and x.max() <= 1.0
    (cached,) = tmp_path.glob("digits-mlp-*.npz")
    again, _, _ = digits_benchmark(seed=0)
    for a, b in zip(net.weights, again.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    cached.unlink()
    retrained, _, _ = digits_benchmark(seed=0)  # the same seed trains the same network
    for a, b in zip(net.weights, retrained.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_a_user_network_and_data_from_npz_files(tmp_path: Path) -> None:
    net, x, y = digits_benchmark(seed=0)
    save_network_npz(net, tmp_path / "mine.npz")
    np.savez(tmp_path / "test.npz", x=x, y=y)
    mine, xs, ys = load_network(str(tmp_path / "mine.npz"), str(tmp_path / "test.npz"))
    assert mine.accuracy(xs, ys) == net.accuracy(x, y)
    with pytest.raises(ConfigError, match="a user network needs its test data"):
        load_network(str(tmp_path / "mine.npz"), None)
    np.savez(tmp_path / "bad.npz", W0=np.ones((3, 2)))
    with pytest.raises(ConfigError, match="W0 has no b0"):
        load_network_npz(tmp_path / "bad.npz")


def test_a_local_cifar10_copy_is_read_from_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
             b"labels": list(rng.integers(0, 10, 20))}  # fmt: skip
    with (folder / "test_batch").open("wb") as f:
        pickle.dump(batch, f)
    x, y = load_cifar10(folder)
    assert x.shape == (20, 3072) and x.min() >= 0.0 and x.max() <= 1.0 and y.shape == (20,)
    net = {"W0": rng.normal(0, 0.01, (3072, 16)), "b0": np.zeros(16),
           "W1": rng.normal(0, 0.1, (16, 10)), "b1": np.zeros(10)}  # fmt: skip
    np.savez(tmp_path / "dense.npz", **net)
    loaded, xs, _ = load_network(str(tmp_path / "dense.npz"), str(folder))
    assert loaded.forward(xs).shape == (20, 10)
    with pytest.raises(ConfigError, match="no CIFAR-10 test batch"):
        load_cifar10(tmp_path)
