"""ptycho.tf_training: the loop learns, the Keras callbacks act, the best epoch is restored,
supervised and mixed-precision paths run, patch statistics and history files are written."""

from __future__ import annotations


import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from ptycho import simulate, tf_training  # noqa: E402
from ptycho.config import ModelConfig  # noqa: E402
from ptycho.data.contract import load_npz  # noqa: E402
from ptycho.data.prepare import prepare_grouped_arrays  # noqa: E402
from ptycho.model import build_model  # noqa: E402
from ptycho.patch_stats import PatchStatsLogger  # noqa: E402
from ptycho.payload import DataStatistics  # noqa: E402

CALLBACKS = {"reduce_lr": {"factor": 0.5, "patience": 3, "min_lr": 1e-5},
             "early_stopping": {"patience": 8}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tf_training_data")
    assert simulate.main(["--output", str(d / "scan.npz"), "--N", "32", "--n-patterns", "24",
                          "--nphotons", "1e6", "--seed", "4", "--no-preview"]) == 0
    scan = load_npz(d / "scan.npz")
    stats = DataStatistics.from_amplitudes(scan.diffraction)
    grouped = prepare_grouped_arrays(scan, 1, stats.normalization_factor, with_ground_truth=True)
    return scan, stats, tf_training.split_from_grouped(grouped)


def new_model(data, **cfg):
    scan, stats, _ = data
    keras.utils.set_random_seed(0)
    return build_model(ModelConfig(N=32, **cfg), scan.probe, stats.intensity_scale,
                       stats.normalization_factor)


def run(model, train, val, **kw):
    args = dict(epochs=3, batch_size=8, learning_rate=1e-3, callback_kwargs=CALLBACKS, seed=0,
                log=lambda line: None)
    args.update(kw)
    return tf_training.fit(model, train, val, **args)


def test_unsupervised_training_lowers_the_poisson_loss(data):
    split = data[2]
    res = run(new_model(data), split, None, epochs=4)
    h = res.history
    assert res.monitor == "train_loss" and res.epochs_run == 4
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert all(np.isfinite(h["train_nll_full"])) and all(np.isnan(h["val_loss"]))
    # full NLL = NLL + mean log K!, so their difference is the same every epoch
    diff = np.array(h["train_nll_full"]) - np.array(h["train_loss"])
    np.testing.assert_allclose(diff, diff[0], rtol=1e-4)


def test_callbacks_reduce_lr_stop_early_and_best_weights_are_restored(data):
    split = data[2]
    train = tf_training.Split(split.X[:16], split.offsets[:16], split.factor)
    val = tf_training.Split(split.X[16:], split.offsets[16:], split.factor)
    never = {"reduce_lr": {"factor": 0.5, "patience": 1, "min_lr": 1e-5, "min_delta": 1e9},
             "early_stopping": {"patience": 2, "min_delta": 1e9}}
    model = new_model(data)
    lines = []
    res = run(model, train, val, epochs=10, callback_kwargs=never, log=lines.append)
    h = res.history
    assert res.stopped_early and res.epochs_run == 3 and res.monitor == "val_loss"
    assert h["lr"] == pytest.approx([1e-3, 1e-3, 5e-4])
    assert any(line.startswith("early stopping after epoch 3") for line in lines)
    assert lines[0].startswith("epoch 1/10: train_loss=")
    best = res.best_epoch
    assert h["val_loss"][best] == min(h["val_loss"])
    _, eval_step = tf_training.make_steps(model, keras.optimizers.Adam())
    loss, _, _ = eval_step(tf.constant(val.X), tf.constant(val.offsets),
                           tf.constant(val.factor, tf.float32), tf.zeros((0,), tf.complex64))
    assert float(loss) == pytest.approx(h["val_loss"][best], rel=1e-5)


def test_supervised_mode_learns_ground_truth(data):
    split = data[2]
    model = new_model(data, mode="supervised", probe_big=False)
    res = run(model, split, None, epochs=4, learning_rate=2e-3)
    assert res.history["train_loss"][-1] < res.history["train_loss"][0]
    assert all(v == 0 for v in res.history["train_nll_full"])
    no_gt = tf_training.Split(split.X, split.offsets, split.factor)
    with pytest.raises(ValueError, match="ground-truth"):
        run(model, no_gt, None, epochs=1)


def test_mixed_precision_partial_batches_and_patch_stats(data, tmp_path):
    split = data[2]
    train = tf_training.Split(split.X[:10], split.offsets[:10], split.factor)
    val = tf_training.Split(split.X[10:16], split.offsets[10:16], split.factor)
    logger = PatchStatsLogger(tmp_path, "tf", 1, limit=2)
    model = build_model(ModelConfig(N=32), data[0].probe, data[1].intensity_scale,
                        data[1].normalization_factor, precision="16-mixed")
    res = run(model, train, val, epochs=1, batch_size=4, precision="16-mixed",
              patch_logger=logger)                     # train batches 4, 4, 2; val 4, 2
    assert res.epochs_run == 1 and np.all(np.isfinite(res.history["train_loss"]))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    phases = [(e["phase"], e["epoch"], e["batch_idx"], e["batch_size"]) for e in logger.entries]
    assert phases == [("train", 0, 0, 4), ("train", 0, 1, 4), ("val", 0, 0, 4),
                      ("val", 0, 1, 2)]
