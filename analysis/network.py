"""Networks and data for the analysis: the built-in benchmark and a user's own files.

A :class:`Network` is a stack of dense layers (weights ``(inputs, outputs)``, biases),
ReLU between them, the last layer linear (logits). Inputs are scaled into ``[0, 1]``
(a row voltage is ``x V_read``); each hidden layer's activations are divided by a
calibrated ``input_scale`` (the 99.9th percentile on the training set) so they too drive
rows within ``[0, 1]`` (clipped), and the layer's digital periphery multiplies back.

- :func:`digits_benchmark`: a 64-32-10 network trained (seeded, numpy Adam) on
  scikit-learn's digits (8 x 8 images: 64 inputs, one 64 x 64 tile per hidden layer),
  which ship with scikit-learn (no download); trained once and cached in
  ``~/.cache/nvmlab`` (``NVMLAB_CACHE``).
- :func:`load_network_npz`: a user's network, ``W0, b0, W1, b1, ...`` (and optionally
  ``scale0, scale1, ...``) in an NPZ file; :func:`load_torch_state_dict` the ``Linear``
  layers of a PyTorch state dict when torch is installed.
- :func:`load_dataset_npz` (``x``, ``y``) and :func:`load_cifar10` (a local copy of the
  CIFAR-10 python batches, flattened; a dense network on it is what nvmlab can map: no
  convolutions).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nvmlab.errors import ConfigError

__all__ = [
    "Network",
    "digits_benchmark",
    "load_cifar10",
    "load_dataset_npz",
    "load_network_npz",
    "load_torch_state_dict",
    "train_mlp",
]


@dataclass
class Network:
    """Dense layers (``weights[l]``: inputs x outputs), biases and the scale of each
    layer's input (``input_scales[0]`` is 1: the data are already in [0, 1])."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    input_scales: list[float] = field(default_factory=list)
    name: str = "network"

    def __post_init__(self) -> None:
        if not self.input_scales:
            self.input_scales = [1.0] * len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.ndim != 2 or b.shape != (w.shape[1],):
                raise ConfigError(
                    f"layer {i}: weights of shape {w.shape} and biases of shape {b.shape}; "
                    "allowed: (inputs, outputs) and (outputs,)",
                    field=f"W{i}",
                )
            if i and self.weights[i - 1].shape[1] != w.shape[0]:
                raise ConfigError(
                    f"layer {i} takes {w.shape[0]} inputs, layer {i - 1} gives "
                    f"{self.weights[i - 1].shape[1]}",
                    field=f"W{i}",
                )

    def layer_input(self, index: int, activations: np.ndarray) -> np.ndarray:
        """What drives the rows of layer ``index``: activations / scale, clipped to [0, 1]."""
        return np.clip(activations / self.input_scales[index], 0.0, 1.0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float inference (logits) with the same input scaling and clipping as the
        arrays see: the reference every accuracy drop is measured against."""
        a = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            u = self.layer_input(i, a)
            a = self.input_scales[i] * (u @ w) + b
            if i < len(self.weights) - 1:
                a = np.maximum(a, 0.0)
        return a

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(np.argmax(self.forward(x), axis=-1) == y))


def train_mlp(
    x: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], *, seed: int = 0, epochs: int = 300,
    lr: float = 0.01, weight_decay: float = 1e-4,
) -> Network:  # fmt: skip
    """A ReLU MLP trained with full-batch Adam on cross-entropy (seeded: reproducible)."""
    rng = np.random.default_rng(seed)
    sizes = [x.shape[1], *hidden, int(y.max()) + 1]
    ws = [rng.normal(0, np.sqrt(2.0 / a), (a, b)) for a, b in zip(sizes, sizes[1:], strict=False)]
    bs = [np.zeros(b) for b in sizes[1:]]
    params = ws + bs
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(sizes[-1])[y]
    for step in range(1, epochs + 1):
        acts = [x]
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            z = acts[-1] @ w + b
            acts.append(np.maximum(z, 0.0) if i < len(ws) - 1 else z)
        logits = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(x)
        gw: list[np.ndarray] = [np.empty(0)] * len(ws)
        gb: list[np.ndarray] = [np.empty(0)] * len(ws)
        for i in reversed(range(len(ws))):
            gw[i] = acts[i].T @ grad + weight_decay * ws[i]
            gb[i] = grad.sum(axis=0)
            if i:
                grad = (grad @ ws[i].T) * (acts[i] > 0)
        grads = gw + gb
        for k, (param, g) in enumerate(zip(params, grads, strict=True)):
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            mh, vh = m[k] / (1 - 0.9**step), v[k] / (1 - 0.999**step)
            param -= lr * mh / (np.sqrt(vh) + 1e-8)
    net = Network(ws, bs)
    # calibrate each hidden layer's input scale on the training set
    a = x
    scales = [1.0]
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        a = np.maximum(a @ w + b, 0.0)
        if i < len(ws) - 1:
            scales.append(float(np.quantile(a, 0.999)) or 1.0)
    net.input_scales = scales
    return net


def _cache_dir() -> Path:
    root = os.environ.get("NVMLAB_CACHE") or Path.home() / ".cache" / "nvmlab"
    return Path(root)


def digits_benchmark(
    *, seed: int = 0, hidden: int = 32, epochs: int = 300, cache: bool = True
) -> tuple[Network, np.ndarray, np.ndarray]:
    """The built-in benchmark: (network, test inputs in [0, 1], test labels). Needs
    scikit-learn (its digits data ship with it; nothing is downloaded)."""
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ModuleNotFoundError:
        raise ConfigError(
            "the built-in benchmark needs scikit-learn (its digits data set ships with it); "
            "allowed: pip install 'nvmlab[analysis]', or give --network and --data files",
            field="--network",
        ) from None
    data = load_digits()
    x = data.data / 16.0
    y = data.target.astype(int)
    order = np.random.default_rng(seed).permutation(len(y))
    split = int(0.7 * len(y))
    train, test = order[:split], order[split:]
    key = hashlib.sha256(
        f"digits-mlp-{seed}-{hidden}-{epochs}-{sklearn.__version__}-v1".encode()
    ).hexdigest()[:16]
    path = _cache_dir() / f"digits-mlp-{key}.npz"
    if cache and path.is_file():
        net = load_network_npz(path)
    else:
        net = train_mlp(x[train], y[train], (hidden,), seed=seed, epochs=epochs)
        net.name = "digits-mlp"
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_network_npz(net, path)
    net.name = "digits-mlp"
    return net, x[test], y[test]


def save_network_npz(net: Network, path: str | Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    for i, (w, b, s) in enumerate(zip(net.weights, net.biases, net.input_scales, strict=True)):
        arrays[f"W{i}"], arrays[f"b{i}"], arrays[f"scale{i}"] = w, b, np.array(s)
    tmp = Path(str(path) + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def load_network_npz(path: str | Path) -> Network:
    """A network from an NPZ file holding ``W0, b0, W1, b1, ...`` (inputs x outputs) and
    optionally ``scale0, scale1, ...`` (each layer's input scale; default 1)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = dict(data)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read a network: {exc}", file=str(path), field="--network"
        ) from None
    ws, bs, scales = [], [], []
    i = 0
    while f"W{i}" in files:
        if f"b{i}" not in files:
            raise ConfigError(f"W{i} has no b{i}", file=str(path), field=f"b{i}")
        ws.append(np.asarray(files[f"W{i}"], dtype=float))
        bs.append(np.asarray(files[f"b{i}"], dtype=float))
        scales.append(float(files.get(f"scale{i}", 1.0)))
        i += 1
    if not ws:
        raise ConfigError(
            "no layer W0 / b0; allowed: an NPZ file with W0, b0, W1, b1, ... (inputs x outputs)",
            file=str(path), field="--network",
        )  # fmt: skip
    return Network(ws, bs, scales, name=Path(path).stem)


def load_torch_state_dict(path: str | Path) -> Network:
    """The ``Linear`` layers (``*.weight`` outputs x inputs, ``*.bias``) of a PyTorch
    state dict, in order; needs torch."""
    try:
        import torch
    except ModuleNotFoundError:
        raise ConfigError(
            "reading a PyTorch state dict needs torch (pip install torch); allowed: an NPZ "
            "network instead",
            field="--network",
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = [k for k in state if k.endswith(".weight") and state[k].ndim == 2]
    ws = [state[k].detach().numpy().T.astype(float) for k in weights]
    bs = [state[k[: -len("weight")] + "bias"].detach().numpy().astype(float) for k in weights]
    return Network(ws, bs, name=Path(path).stem)


def load_dataset_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Test data ``x`` (n x inputs, already in [0, 1]) and ``y`` (n labels) from an NPZ."""
    try:
        with np.load(path, allow_pickle=False) as data:
            x, y = np.asarray(data["x"], dtype=float), np.asarray(data["y"]).astype(int)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"cannot read a data set ({exc}); allowed: an NPZ file with x (n x inputs, in "
            "[0, 1]) and y (n labels)",
            file=str(path), field="--data",
        ) from None  # fmt: skip
    return x.reshape(len(x), -1), y


def load_cifar10(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The test batch of a local CIFAR-10 copy (the python version's folder,
    ``cifar-10-batches-py``): inputs flattened to 3072 values in [0, 1], labels."""
    path = Path(folder) / "test_batch"
    if not path.is_file():
        raise ConfigError(
            f"no CIFAR-10 test batch at {path}; allowed: the folder cifar-10-batches-py of "
            "a local copy (nothing is downloaded)",
            field="--data",
        )
    with path.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")  # noqa: S301 - the user's own local file
    x = np.asarray(batch[b"data"], dtype=float) / 255.0
    y = np.asarray(batch[b"labels"]).astype(int)
    return x, y
