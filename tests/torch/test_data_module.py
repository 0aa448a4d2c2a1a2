"""ptycho_torch.data_module: splits, batches, normalisation, supervised targets."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from tests.torch.torch_testdata import make_payload, make_scan  # noqa: E402
from ptycho.sampling import epoch_order, split_groups  # noqa: E402
from ptycho_torch.data_module import EpochOrderSampler, PtychoDataModule  # noqa: E402


def test_holdout_split_is_the_core_split(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path, data={"seed": 4},
                           training={"validation_fraction": 0.2})
    dm = PtychoDataModule(payload, tiny_scan)
    dm.setup()
    full = PtychoDataModule(make_payload(tiny_scan, output_dir=tmp_path, data={"seed": 4}),
                            tiny_scan, tiny_scan)
    full.setup()
    tr, va = split_groups(len(full.train_arrays), 0.2, seed=4)
    assert np.array_equal(dm.train_arrays.nn_indices, full.train_arrays.nn_indices[tr])
    assert np.array_equal(dm.val_arrays.nn_indices, full.train_arrays.nn_indices[va])


def _row_index(arrays):
    return {arrays.X[i].tobytes(): i for i in range(len(arrays))}


def test_training_batches_follow_the_core_epoch_order(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path, execution={"seed": 11},
                           training={"batch_size": 8})
    dm = PtychoDataModule(payload, tiny_scan)
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, EpochOrderSampler)
    rows = _row_index(dm.train_arrays)
    n = len(dm.train_arrays)
    for epoch in (0, 1, 0):
        loader.sampler.set_epoch(epoch)
        seen = [rows[x.numpy().tobytes()] for b in loader for x in b[0]]
        assert seen == epoch_order(n, 11, epoch).tolist()
    assert list(EpochOrderSampler(n, 11, epoch=1)) == epoch_order(n, 11, 1).tolist()
    assert len(EpochOrderSampler(n, 11)) == n


def test_holdout_split_batches_and_normalisation(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path, model={"gridsize": 2},
                           data={"n_groups": 30, "K": 5},
                           training={"batch_size": 7, "validation_fraction": 0.2})
    dm = PtychoDataModule(payload, tiny_scan)
    dm.setup()
    assert len(dm.train_arrays) == 24 and len(dm.val_arrays) == 6
    assert dm.steps_per_epoch() == 4
    assert dm.steps_per_epoch(processes=2) == 2 and dm.steps_per_epoch(processes=5) == 1
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
    # a separate validation scan is normalised by its own factor, as inference does
    from ptycho.physics import normalization_factor

    own = normalization_factor(test.diffraction)
    assert own != pytest.approx(payload.stats.normalization_factor, rel=1e-3)
    idx = dm.val_arrays.nn_indices[0]
    np.testing.assert_allclose(dm.val_arrays.X[0], test.diffraction[idx] / own, rtol=1e-6)
    assert torch.all(offsets == 0)  # gridsize 1: a pattern is its own group centre


def test_wrong_pattern_size_is_refused(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path)
    other = make_scan(N=64, n_side=3, seed=2)
    with pytest.raises(ValueError, match="model.N"):
        PtychoDataModule(payload, tiny_scan, other).setup()


@pytest.mark.parametrize("workers, schedule", [(0, "plateau"), (1, "plateau"), (1, "cosine")])
def test_lightning_fit_and_resume_visit_the_core_order(tiny_scan, tmp_path, workers, schedule):
    from lightning.pytorch.callbacks import Callback

    from ptycho_torch.workflows.components import run_training

    class Record(Callback):
        def __init__(self):
            self.seen = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.setdefault(trainer.current_epoch, []).extend(
                x.numpy().tobytes() for x in batch[0])

    def payload(epochs, resume):
        return make_payload(tiny_scan, output_dir=tmp_path / "run", model={"filter_scale": 0.125},
                            training={"max_epochs": epochs, "batch_size": 8, "resume": resume,
                                      "lr_schedule": schedule},
                            execution={"seed": 3, "num_workers": workers})

    dm = PtychoDataModule(payload(1, False), tiny_scan)
    dm.setup()
    rows, n = _row_index(dm.train_arrays), len(dm.train_arrays)
    first, resumed = Record(), Record()
    run_training(payload(1, False), tiny_scan, extra_callbacks=[first])
    run_training(payload(2, True), tiny_scan, extra_callbacks=[resumed])
    assert set(first.seen) == {0} and set(resumed.seen) == {1}
    for rec in (first, resumed):
        for epoch, seen in rec.seen.items():
            assert [rows[x] for x in seen] == epoch_order(n, 3, epoch).tolist(), epoch
