"""Same seed, same training run: both backends' training paths start from the same weights
(``ptycho.initial_weights``), hold out the same validation groups and visit the same batches in
the same order (``ptycho.sampling``), and follow the same learning-rate schedule; their first
epochs' losses then agree to float32 round-off."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from ptycho import tf_weights  # noqa: E402
from ptycho.initial_weights import initial_conv_weights  # noqa: E402
from ptycho.sampling import epoch_order, split_groups  # noqa: E402
from ptycho_torch import weights as torch_weights  # noqa: E402
from tests.torch.torch_testdata import make_payload, make_scan  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def scan():
    """36 patterns, N=32, 'grf' object."""
    return make_scan(seed=1)


def payload(scan, out, seed=5, **sections):
    sections.setdefault("model", {}).setdefault("filter_scale", 0.125)
    sections.setdefault("execution", {})["seed"] = seed
    sections["execution"].setdefault("accelerator", "cpu")
    sections.setdefault("data", {})["seed"] = seed
    return make_payload(scan, output_dir=out, **sections)


def tf_initial(p):
    from ptycho.workflow import build_training_model

    return tf_weights.export_weights(build_training_model(p))


def torch_initial(p):
    from ptycho_torch.lightning_module import PtychoLightningModule

    return torch_weights.export_weights(PtychoLightningModule(p).model)


@pytest.mark.parametrize("gridsize, probe_big", [(1, True), (2, False)])
def test_training_models_start_from_the_same_seeded_weights(scan, tmp_path, gridsize, probe_big):
    model = {"gridsize": gridsize, "probe_big": probe_big}
    p = payload(scan, tmp_path, seed=5, model=dict(model))
    w_tf, w_t = tf_initial(p), torch_initial(p)
    assert list(w_tf) == list(w_t)
    for k in w_tf:
        assert w_tf[k].dtype == w_t[k].dtype == np.float32, k
        assert np.array_equal(w_tf[k], w_t[k]), k
    core = initial_conv_weights(p.config.model, 5)
    assert all(np.array_equal(w_t[k], v) for k, v in core.items())
    other_tf = tf_initial(payload(scan, tmp_path, seed=6, model=dict(model)))
    other_t = torch_initial(payload(scan, tmp_path, seed=6, model=dict(model)))
    for k in core:
        assert np.array_equal(other_tf[k], other_t[k]), k
        if k.endswith("/kernel"):
            assert not np.array_equal(other_t[k], w_t[k]), k


def _record_tf_batches(monkeypatch):
    from ptycho import tf_training

    seen: dict[int, list] = {}
    real = tf_training._run_epoch

    def spy(step, split, batch_size, order, *, phase, epoch, **kw):
        if phase == "train":
            seen[epoch] = [np.transpose(split.X[order[i:i + batch_size]], (0, 3, 1, 2))
                           for i in range(0, len(split), batch_size)]
        return real(step, split, batch_size, order, phase=phase, epoch=epoch, **kw)

    monkeypatch.setattr(tf_training, "_run_epoch", spy)
    return seen


def _batch_recorder():
    from lightning.pytorch.callbacks import Callback

    class Record(Callback):
        def __init__(self):
            self.seen: dict[int, list] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.setdefault(trainer.current_epoch, []).append(batch[0].numpy().copy())

    return Record()


def test_both_training_paths_split_order_and_learn_alike(scan, tmp_path, monkeypatch):
    from ptycho import tf_training
    from ptycho.workflow import run_training as tf_run
    from ptycho_torch.data_module import PtychoDataModule
    from ptycho_torch.workflows.components import run_training as torch_run

    training = {"max_epochs": 2, "batch_size": 8, "validation_fraction": 0.2,
                "learning_rate": 1e-4}
    p_tf = payload(scan, tmp_path / "tf", seed=7, training=dict(training))
    p_t = payload(scan, tmp_path / "torch", seed=7, training=dict(training))

    tf_batches = _record_tf_batches(monkeypatch)
    fit_args = {}
    real_fit = tf_training.fit

    def fit_spy(model, train, val, **kw):
        fit_args.update(weights=tf_weights.export_weights(model), train=train, val=val, **kw)
        return real_fit(model, train, val, **kw)

    monkeypatch.setattr(tf_training, "fit", fit_spy)
    res_tf = tf_run(p_tf, scan, log=lambda line: None)
    record = _batch_recorder()
    res_t = torch_run(p_t, scan, extra_callbacks=[record])

    # the same validation split: the core split of all groups
    dm = PtychoDataModule(p_t, scan)
    dm.setup()
    tr, va = split_groups(len(dm.train_arrays) + len(dm.val_arrays), 0.2, 7)
    assert len(va) == len(dm.val_arrays) == len(fit_args["val"]) == 7
    assert np.array_equal(np.transpose(fit_args["train"].X, (0, 3, 1, 2)), dm.train_arrays.X)
    assert np.array_equal(np.transpose(fit_args["val"].X, (0, 3, 1, 2)), dm.val_arrays.X)
    # the same start
    w_t = torch_initial(p_t)
    assert all(np.array_equal(fit_args["weights"][k], w_t[k]) for k in w_t)
    assert fit_args["seed"] == 7
    # the same batches in the same order, every epoch: the core order
    assert sorted(tf_batches) == sorted(record.seen) == [0, 1]
    n = len(dm.train_arrays)
    for epoch in (0, 1):
        a, b = tf_batches[epoch], record.seen[epoch]
        assert [x.shape[0] for x in a] == [x.shape[0] for x in b] == [8, 8, 8, 5]
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), epoch
        assert np.array_equal(np.concatenate(b), dm.train_arrays.X[epoch_order(n, 7, epoch)])
    # hence the same losses, up to float32 round-off of 8 Adam steps (measured 2e-7)
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose(res_t.history[key], res_tf.history[key], rtol=1e-5,
                                   err_msg=key)


def test_learning_rate_schedules_are_the_same():
    import keras

    from ptycho.config import PtychoConfig, with_overrides
    from ptycho.config_bridge import (to_keras_callback_kwargs, to_torch_optimizer_kwargs,
                                      to_torch_scheduler_kwargs)

    rng = np.random.default_rng(0)
    steps = rng.choice([-3.0, -5e-5, 0.0, 2e-4, 1.0], size=40, p=[0.3, 0.2, 0.2, 0.1, 0.2])
    losses = -1300.0 + np.cumsum(steps)
    for patience in (0, 1, 3):
        cfg = with_overrides(PtychoConfig(), {"training.lr_reduce_patience": patience,
                                              "training.lr_reduce_factor": 0.5,
                                              "training.min_learning_rate": 1e-5,
                                              "training.learning_rate": 1e-3})

        class Host:
            optimizer = keras.optimizers.Adam(learning_rate=1e-3)

        cb = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", verbose=0,
                                               **to_keras_callback_kwargs(cfg)["reduce_lr"])
        cb.set_model(Host())
        cb.on_train_begin()
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.Adam([param], **to_torch_optimizer_kwargs(cfg))
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **to_torch_scheduler_kwargs(cfg))
        lr_keras, lr_torch = [], []
        for epoch, loss in enumerate(losses):
            cb.on_epoch_end(epoch, {"val_loss": float(loss)})
            sched.step(float(loss))
            lr_keras.append(float(keras.ops.convert_to_numpy(Host.optimizer.learning_rate)))
            lr_torch.append(opt.param_groups[0]["lr"])
        assert len(set(lr_torch)) > 2, "the schedule never reduced: a useless check"
        np.testing.assert_allclose(lr_keras, lr_torch, rtol=1e-6, err_msg=f"patience {patience}")


def test_cosine_schedule_sets_the_same_rate_every_step_on_both_backends(scan, tmp_path,
                                                                        monkeypatch):
    import keras
    from lightning.pytorch.callbacks import Callback

    from ptycho import tf_training
    from ptycho.lr_schedule import cosine_learning_rate
    from ptycho.workflow import run_training as tf_run
    from ptycho_torch.workflows.components import run_training as torch_run

    training = {"max_epochs": 2, "batch_size": 8, "validation_fraction": 0.2,
                "learning_rate": 1e-3, "min_learning_rate": 1e-5, "lr_schedule": "cosine",
                "lr_warmup_fraction": 0.25}
    tf_rates: list[float] = []
    real_set = tf_training._set_learning_rate

    def set_spy(optimizer, rate, first_step, batch_idx):
        real_set(optimizer, rate, first_step, batch_idx)
        tf_rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))

    monkeypatch.setattr(tf_training, "_set_learning_rate", set_spy)
    res_tf = tf_run(payload(scan, tmp_path / "tf", seed=7, training=dict(training)), scan,
                    log=lambda line: None)

    class Rates(Callback):
        def __init__(self):
            self.rates: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    record = Rates()
    res_t = torch_run(payload(scan, tmp_path / "torch", seed=7, training=dict(training)), scan,
                      extra_callbacks=[record])
    # 29 training groups in batches of 8: 4 steps per epoch, 8 in all, 2 of them warm-up
    expected = [cosine_learning_rate(s, 8, 1e-3, 1e-5, 0.25) for s in range(8)]
    assert expected[1] == pytest.approx(1e-3) and expected[-1] == pytest.approx(1e-5)
    np.testing.assert_allclose(tf_rates, expected, rtol=1e-6)
    np.testing.assert_allclose(record.rates, expected, rtol=1e-6)
    np.testing.assert_allclose(res_tf.history["lr"], res_t.history["lr"], rtol=1e-6)
