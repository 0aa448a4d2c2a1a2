"""Guard: train and infer through the PyTorch CLIs on tiny data, gridsize 1 and 2.

Asserts on the patch statistics of the model's predicted patches (finite, not collapsed,
non-zero mean, at most `limit` batches per phase) and on the PNG grid (exists, decodes, not
uniform), for the train, val and inference phases, plus the inference outputs.
"""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

from ptycho import simulate  # noqa: E402
from ptycho_torch import inference, train  # noqa: E402

LIMIT = 2


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("guard_data")
    assert simulate.main(["--output", str(d), "--N", "32", "--n-patterns", "40", "--split",
                          "region", "--object", "grf", "--nphotons", "1e6", "--seed", "3",
                          "--no-preview"]) == 0
    return d / "train.npz", d / "test.npz"


def _check_stats(path, phases):
    entries = json.loads(path.read_text())
    assert isinstance(entries, list) and entries
    for phase in phases:
        mine = [e for e in entries if e["phase"] == phase]
        assert 1 <= len(mine) <= LIMIT, (phase, len(mine))
        for e in mine:
            assert e["backend"] == "torch" and e["all_finite"]
            assert np.isfinite([e["global_mean"], e["global_std"], e["var_zero_mean"]]).all()
            assert e["var_zero_mean"] > 1e-6, e
            assert abs(e["global_mean"]) > 1e-9, e
    return entries


def _check_png(path):
    import matplotlib.image as mpimg

    assert path.is_file()
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and min(img.shape[:2]) > 50
    assert float(img[..., :3].std()) > 0.01


@pytest.mark.parametrize("gridsize,decoder,per_pattern,projection_steps", [
    (1, "reference", False, 0), (2, "reference", False, 0), (2, "unet", False, 0),
    (2, "unet", True, 0), (2, "reference", False, 2)])
def test_train_then_infer_gridsize(scan, tmp_path, gridsize, decoder, per_pattern,
                                  projection_steps):
    train_file, test_file = scan
    out = tmp_path / "train"
    # no test file: a seeded validation_fraction of the 16 training groups validates
    rc = train.main(["--train_data_file", str(train_file),
                     "--output_dir", str(out), "--N", "32", "--gridsize", str(gridsize),
                     "--max_epochs", "1", "--batch_size", "8", "--n_groups", "16", "--logger", "none",
                     "--num_workers", "0", "--accelerator", "cpu", "--log-patch-stats",
                     "--patch-stats-limit", str(LIMIT), "--validation_fraction", "0.2",
                     "--decoder", decoder] + (["--per_pattern"] if per_pattern else [])
                    + ["--projection_steps", str(projection_steps)])
    assert rc == 0
    entries = _check_stats(out / "torch_patch_stats.json", ("train", "val"))
    assert all(e["gridsize"] == gridsize and e["epoch"] == 0 for e in entries)
    _check_png(out / "torch_patch_grid.png")
    for name in ("history.json", "history.csv", "loss_curve.png", "model/manifest.json",
                 "model/model.pt", "model/probe.npy", "checkpoints/last.ckpt",
                 "training_payload.json"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert len(history["time_s"]) == 1 and history["time_s"][0] > 0
    saved = json.loads((out / "training_payload.json").read_text())
    assert saved["config"]["model"]["gridsize"] == gridsize
    assert saved["config"]["model"]["decoder"] == decoder
    assert saved["config"]["model"]["per_pattern"] is per_pattern
    assert saved["config"]["model"]["projection_steps"] == projection_steps

    inf = tmp_path / "infer"
    rc = inference.main(["--model_path", str(out / "model"), "--test_data", str(test_file),
                         "--output_dir", str(inf), "--batch_size", "16", "--accelerator", "cpu",
                         "--log-patch-stats", "--patch-stats-limit", str(LIMIT)])
    assert rc == 0
    _check_stats(inf / "torch_patch_stats.json", ("inference",))
    _check_png(inf / "torch_patch_grid.png")
    timing = json.loads((inf / "timing.json").read_text())
    # every pattern is a group (n_groups defaults to all): 40 groups, batches 16+16+8
    assert timing["n_groups"] == 40 and timing["n_patterns"] == 40 * gridsize ** 2
    for key in ("load_s", "predict_s", "stitch_s", "total_s", "patterns_per_s", "peak_rss_mb"):
        assert timing[key] > 0, key
    with np.load(inf / "reconstruction.npz", allow_pickle=False) as z:
        obj = z["object"]
        assert obj.dtype == np.complex64 and obj.shape == z["amplitude"].shape
        assert z["scanned_mask"].any() and np.isfinite(obj).all()
        assert z["canvas_y"].shape == (obj.shape[0],) and z["canvas_x"].shape == (obj.shape[1],)
        assert np.abs(obj[z["scanned_mask"]]).std() > 1e-4
    metrics = json.loads((inf / "metrics.json").read_text())
    assert -1 <= metrics["amp_ssim"] <= 1 and -1 <= metrics["phase_ssim"] <= 1
    for name in ("reconstructed_amplitude.png", "reconstructed_phase.png"):
        _check_png(inf / name)
