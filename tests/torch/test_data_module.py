"""ptycho_torch.data_module: splits, batches, normalisation, supervised targets."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from tests.torch.torch_testdata import make_payload, make_scan  # noqa: E402
from ptycho_torch.data_module import PtychoDataModule, split_indices  # noqa: E402


def test_split_indices_is_seeded_disjoint_and_complete():
    tr, va = split_indices(20, 0.25, seed=3)
    assert len(va) == 5 and len(tr) == 15
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(20))
    tr2, va2 = split_indices(20, 0.25, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, split_indices(20, 0.25, seed=4)[1])
    assert len(split_indices(2, 0.01, 0)[1]) == 1
    assert len(split_indices(1, 0.5, 0)[1]) == 0


def test_holdout_split_batches_and_normalisation(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path, model={"gridsize": 2},
                           data={"n_groups": 30, "K": 5},
                           training={"batch_size": 7, "validation_fraction": 0.2})
    dm = PtychoDataModule(payload, tiny_scan)
    dm.setup()
    assert len(dm.train_arrays) == 24 and len(dm.val_arrays) == 6
    assert dm.steps_per_epoch() == 4
    batches = list(dm.train_dataloader())
    assert [b[0].shape[0] for b in batches] == [7, 7, 7, 3]  # last partial batch kept
    X, offsets = batches[0]
    assert X.shape[1:] == (4, 32, 32) and X.dtype == torch.float32
    assert offsets.shape[1:] == (4, 2)
    # X is the raw amplitude divided by the payload's normalisation factor
    f = payload.stats.normalization_factor
    idx = dm.train_arrays.nn_indices[0]
    np.testing.assert_allclose(dm.train_arrays.X[0], tiny_scan.diffraction[idx] / f, rtol=1e-6)
    # mean over patterns of sum X^2 is (N/2)^2 on the full data
    full = tiny_scan.diffraction / f
    assert np.mean(np.sum(full.astype(np.float64) ** 2, axis=(1, 2))) == pytest.approx(256, rel=1e-5)
    assert len(list(dm.val_dataloader())) == 1


def test_test_file_validates_and_supervised_batches_carry_ground_truth(tiny_scan, tmp_path):
    test = make_scan(n_side=4, seed=9)
    payload = make_payload(tiny_scan, output_dir=tmp_path, model={"mode": "supervised"},
                           training={"batch_size": 16})
    dm = PtychoDataModule(payload, tiny_scan, test)
    dm.setup()
    assert len(dm.train_arrays) == 36 and len(dm.val_arrays) == 16
    X, offsets, gt = next(iter(dm.val_dataloader()))
    assert gt.dtype == torch.complex64 and gt.shape == X.shape
    assert torch.all(offsets == 0)  # gridsize 1: a pattern is its own group centre


def test_wrong_pattern_size_is_refused(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path)
    other = make_scan(N=64, n_side=3, seed=2)
    with pytest.raises(ValueError, match="model.N"):
        PtychoDataModule(payload, tiny_scan, other).setup()
