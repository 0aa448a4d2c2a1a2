"""ptycho_torch.lightning_module: loss, optimiser contents, trained intensity scale."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from ptycho import physics as ref  # noqa: E402
from ptycho.bundle import load_bundle  # noqa: E402
from ptycho_torch.data_module import PtychoDataModule  # noqa: E402
from ptycho_torch.lightning_module import PtychoLightningModule  # noqa: E402
from tests.torch.torch_testdata import make_payload  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def _batch(payload, scan, n=4):
    dm = PtychoDataModule(payload, scan)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    return tuple(t[:n] for t in batch)


def test_unsupervised_loss_is_mean_poisson_nll_of_counts(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path)
    module = PtychoLightningModule(payload).eval()
    X, offsets = _batch(payload, tiny_scan)
    with torch.no_grad():
        loss = module.training_step((X, offsets), 0)
        counts = module.model(X, offsets).counts.numpy()
    K = (X.numpy().astype(np.float64) * payload.stats.normalization_factor) ** 2
    expected = ref.poisson_nll(counts, K).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_targets_are_the_files_photon_counts(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path)
    module = PtychoLightningModule(payload)
    dm = PtychoDataModule(payload, tiny_scan)
    dm.setup()
    X = torch.from_numpy(np.array(dm.train_arrays.X[:3]))
    idx = dm.train_arrays.nn_indices[:3, 0]
    K = module.model.target_counts(X).numpy()[:, 0]
    np.testing.assert_allclose(K, tiny_scan.diffraction[idx].astype(np.float64) ** 2,
                               rtol=1e-4, atol=1e-3)


def test_supervised_loss_is_amplitude_plus_phase_mae(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path,
                           model={"mode": "supervised", "probe_big": False})
    module = PtychoLightningModule(payload).eval()
    X, offsets, gt = _batch(payload, tiny_scan)
    with torch.no_grad():
        loss = module.training_step((X, offsets, gt), 0)
        out = module.model(X, offsets)
    sl = slice(8, 24)
    amp = out.patch_amp.numpy()[..., sl, sl]
    ph = out.patch_phase.numpy()[..., sl, sl]
    g = gt.numpy()[..., sl, sl]
    expected = np.abs(amp - np.abs(g)).mean() + np.abs(ph - np.angle(g)).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("trainable", [False, True])
def test_optimizer_holds_scale_and_probe_iff_trainable(tiny_scan, tmp_path, trainable):
    payload = make_payload(tiny_scan, output_dir=tmp_path,
                           model={"intensity_scale_trainable": trainable,
                                  "probe_trainable": trainable},
                           training={"learning_rate": 2e-4, "lr_reduce_factor": 0.25,
                                     "lr_reduce_patience": 5, "min_learning_rate": 1e-7})
    module = PtychoLightningModule(payload, monitor="train_loss")
    conf = module.configure_optimizers()
    opt = conf["optimizer"]
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    for name in ("log_intensity_scale", "probe"):
        assert (id(getattr(module.model, name)) in ids) is trainable
    assert id(module.model.enc0_conv0.weight) in ids
    assert opt.param_groups[0]["lr"] == 2e-4
    sched = conf["lr_scheduler"]
    assert sched["monitor"] == "train_loss"
    # torch reduces after more than `patience` bad epochs, Keras (the config's meaning) after 5
    assert sched["scheduler"].factor == 0.25 and sched["scheduler"].patience == 4
    assert sched["scheduler"].threshold_mode == "abs"
    assert sched["scheduler"].min_lrs == [1e-7]


def test_module_holds_the_payload_and_its_patch_settings(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path,
                           training={"log_patch_stats": True, "patch_stats_limit": 3})
    module = PtychoLightningModule(payload)
    assert module.payload is payload
    assert module.patch_logger is not None and module.patch_logger.limit == 3
    assert module.hparams["config"]["training"]["patch_stats_limit"] == 3
    assert PtychoLightningModule(make_payload(tiny_scan, output_dir=tmp_path)).patch_logger is None


def test_trained_intensity_scale_reaches_the_bundle(tiny_scan, tmp_path):
    from ptycho_torch.workflows.components import load_state_dict, run_training

    payload = make_payload(tiny_scan, output_dir=tmp_path,
                           model={"intensity_scale_trainable": True},
                           data={"n_groups": 12},
                           training={"max_epochs": 1, "batch_size": 6, "learning_rate": 1e-2},
                           execution={"accelerator": "cpu"})
    result = run_training(payload, tiny_scan)
    initial = payload.stats.intensity_scale
    assert result.intensity_scale != pytest.approx(initial, rel=1e-6)
    bundle = load_bundle(result.bundle_dir)
    assert bundle.intensity_scale == pytest.approx(result.intensity_scale, rel=1e-9)
    state = load_state_dict(bundle.weights_path)
    assert float(torch.exp(state["log_intensity_scale"])) == pytest.approx(bundle.intensity_scale,
                                                                          rel=1e-6)
    manifest = json.loads((result.bundle_dir / "manifest.json").read_text())
    assert manifest["data_intensity_scale"] == pytest.approx(initial)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["intensity_scale"][-1] == pytest.approx(result.intensity_scale, rel=1e-6)
