"""Guard: train and infer through the TensorFlow CLIs in-process on tiny data, gridsize 1 and 2.

Asserts on the patch statistics of the model's predicted patches (finite, not collapsed, non-zero
mean, at most `limit` batches per phase) and on the PNG grid (exists, decodes, not uniform) for
the train, val and inference phases, and on the inference outputs (stitched object shape equal
to objectGuess, no NaN, every group predicted including the last partial batch).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from ptycho import inference, simulate, train  # noqa: E402
from ptycho.data.contract import load_npz  # noqa: E402

LIMIT = 2


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("tf_guard_data")
    assert simulate.main(["--output", str(d), "--N", "32", "--n-patterns", "40", "--split",
                          "region", "--object", "lines", "--nphotons", "1e6", "--seed", "5",
                          "--no-preview"]) == 0
    return d / "train.npz", d / "test.npz"


def check_stats(path, phases, gridsize):
    entries = json.loads(path.read_text())
    assert isinstance(entries, list) and entries
    for phase in phases:
        mine = [e for e in entries if e["phase"] == phase]
        assert 1 <= len(mine) <= LIMIT, (phase, len(mine))
        for e in mine:
            assert e["backend"] == "tf" and e["gridsize"] == gridsize and e["all_finite"]
            assert np.isfinite([e["global_mean"], e["global_std"], e["var_zero_mean"]]).all()
            assert e["var_zero_mean"] > 1e-6, e
            assert abs(e["global_mean"]) > 1e-9, e
    assert {e["phase"] for e in entries} == set(phases)
    return entries


def check_png(path):
    import matplotlib.image as mpimg

    assert path.is_file()
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and min(img.shape[:2]) > 50
    assert float(img[..., :3].std()) > 0.01


@pytest.mark.parametrize("gridsize,decoder,per_pattern,projection_steps", [
    (1, "reference", False, 0), (2, "reference", False, 0), (2, "unet", False, 0),
    (2, "unet", True, 0), (2, "reference", False, 2)])
def test_train_then_infer(scan, tmp_path, gridsize, decoder, per_pattern, projection_steps,
                          capsys):
    train_file, test_file = scan
    out = tmp_path / "train"
    rc = train.main(["--train_data_file", str(train_file), "--output_dir", str(out),
                     "--gridsize", str(gridsize), "--nepochs", "1", "--batch_size", "8",
                     "--n_groups", "24", "--validation_fraction", "0.25", "--seed", "1",
                     "--decoder", decoder, "--log-patch-stats", "--patch-stats-limit", str(LIMIT)]
                    + (["--per_pattern"] if per_pattern else [])
                    + ["--projection_steps", str(projection_steps)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1: train_loss=" in printed and "val_loss=" in printed
    assert "train_nll_full=" in printed
    check_stats(out / "tf_patch_stats.json", ("train", "val"), gridsize)
    check_png(out / "tf_patch_grid.png")
    for name in ("history.json", "history.csv", "loss_curve.png", "model/manifest.json",
                 "model/model.weights.h5", "model/probe.npy"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert len(history["train_loss"]) == 1 and np.isfinite(history["val_loss"][0])
    manifest = json.loads((out / "model/manifest.json").read_text())
    assert manifest["backend"] == "tf" and manifest["N"] == 32
    assert manifest["config"]["model"]["decoder"] == decoder
    assert manifest["config"]["model"]["per_pattern"] is per_pattern
    assert manifest["config"]["model"]["projection_steps"] == projection_steps
    assert manifest["intensity_scale"] == pytest.approx(history["intensity_scale"][-1])

    inf = tmp_path / "infer"
    rc = inference.main(["--model_path", str(out), "--test_data", str(test_file),
                         "--output_dir", str(inf), "--batch_size", "16",
                         "--log-patch-stats", "--patch-stats-limit", str(LIMIT)])
    assert rc == 0
    assert "intensity scale" in capsys.readouterr().out
    check_stats(inf / "tf_patch_stats.json", ("inference",), gridsize)
    check_png(inf / "tf_patch_grid.png")
    timing = json.loads((inf / "timing.json").read_text())
    # every test pattern is a group seed (n_groups: all): 40 groups, batches 16 + 16 + 8
    assert timing["n_groups"] == 40 and timing["n_patterns"] == 40 * gridsize ** 2
    for key in ("load_s", "predict_s", "stitch_s", "total_s", "patterns_per_s", "peak_rss_mb"):
        assert timing[key] > 0, key
    truth = load_npz(test_file).object     # canvas = objectGuess shape, origin (0, 0)
    with np.load(inf / "reconstruction.npz", allow_pickle=False) as z:
        obj = z["object"]
        assert obj.dtype == np.complex64 and obj.shape == truth.shape
        assert np.isfinite(obj).all() and z["scanned_mask"].any()
        assert np.abs(obj[z["scanned_mask"]]).std() > 1e-4
        assert z["canvas_y"].shape == (obj.shape[0],) and z["canvas_x"].shape == (obj.shape[1],)
        idx = z["scan_index"]
        assert z["scan_positions"].shape == (len(idx), 2)
        assert set(idx) <= set(range(40)) and len(idx) >= (40 if gridsize == 1 else 30)
        data = load_npz(test_file)
        np.testing.assert_allclose(z["scan_positions"] + z["origin"], data.positions[idx])
    metrics = json.loads((inf / "metrics.json").read_text())
    assert -1 <= metrics["amp_ssim"] <= 1 and -1 <= metrics["phase_ssim"] <= 1
    for name in ("reconstructed_amplitude.png", "reconstructed_phase.png"):
        check_png(inf / name)
