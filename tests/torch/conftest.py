"""Fixtures of the PyTorch backend tests: tiny simulated scans."""
import pytest

from ptycho.data.contract import save_npz
from tests.torch.torch_testdata import make_scan


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """(train.npz, test.npz) paths: 36 training and 25 test patterns, N=32, with objectGuess."""
    d = tmp_path_factory.mktemp("torch_data")
    train = d / "train.npz"
    test = d / "test.npz"
    save_npz(train, make_scan(seed=1))
    save_npz(test, make_scan(n_side=5, seed=2))
    return train, test


@pytest.fixture(scope="session")
def tiny_scan():
    """In-memory training scan (36 patterns, N=32)."""
    return make_scan(seed=1)
