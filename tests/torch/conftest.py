"""Tiny simulated scans for the PyTorch backend tests (made here, never downloaded)."""
import numpy as np
import pytest

from ptycho.data.contract import save_npz
from ptycho.objects import make_object
from ptycho.probe import default_probe
from ptycho.simulate import simulate_scan


def make_scan(N=32, n_side=6, step=5.0, nphotons=1e6, seed=0, jitter=0.4):
    """A raster scan of n_side**2 patterns over a 'grf' object, Poisson noise, fixed seed."""
    rng = np.random.default_rng(seed)
    span = step * (n_side - 1)
    size = int(np.ceil(span)) + N + 4
    obj = make_object("grf", (size, size), rng)
    grid = np.arange(n_side) * step + N // 2 + 2
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    pos = pos + rng.uniform(-jitter, jitter, pos.shape)
    return simulate_scan(obj, default_probe(N), pos, nphotons, rng, interpolation="bilinear")


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """(train.npz, test.npz) paths: 36 training and 25 test patterns, N=32, with objectGuess."""
    d = tmp_path_factory.mktemp("torch_data")
    train = d / "train.npz"
    test = d / "test.npz"
    save_npz(train, make_scan(seed=1))
    save_npz(test, make_scan(n_side=5, seed=2))
    return train, test
