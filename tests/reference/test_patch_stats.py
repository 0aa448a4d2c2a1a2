"""Patch statistics and the patch grid PNG (ptycho.patch_stats)."""

import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from ptycho.patch_stats import PatchStatsLogger, compute_patch_stats, render_patch_grid


def _known_patches():
    """(B=2, C=2, 4, 4) complex patches with hand-computable amplitude statistics."""
    amp = np.zeros((2, 2, 4, 4))
    amp[0, 0] = 1.0                                  # constant: variance 0
    amp[0, 1, :2] = 2.0                              # half 2, half 0: mean 1, var 1
    amp[1, 0] = np.arange(16).reshape(4, 4)          # 0..15: mean 7.5, var (16^2-1)/12
    amp[1, 1] = 3.0
    phase = np.linspace(-1, 1, 16).reshape(4, 4)
    return (amp * np.exp(1j * phase)).astype(np.complex64), amp


def test_stats_of_known_arrays():
    patches, amp = _known_patches()
    s = compute_patch_stats(patches, phase="train", batch_idx=3, backend="torch", gridsize=2,
                            n_per_patch=3)
    assert s["phase"] == "train" and s["batch_idx"] == 3 and s["backend"] == "torch"
    assert s["gridsize"] == 2 and s["batch_size"] == 2 and s["n_patches"] == 4
    assert s["patch_shape"] == [4, 4]
    assert s["global_mean"] == pytest.approx(amp.mean(), rel=1e-6)
    assert s["global_std"] == pytest.approx(amp.std(), rel=1e-6)
    assert s["var_zero_mean"] == pytest.approx((0 + 1 + (16 ** 2 - 1) / 12 + 0) / 4, rel=1e-6)
    assert s["global_min"] == 0.0 and s["global_max"] == pytest.approx(15.0)
    assert len(s["per_patch"]) == 3
    assert s["per_patch"][1] == pytest.approx(dict(index=1, mean=1.0, std=1.0, min=0.0, max=2.0))
    assert s["per_patch"][2]["max"] == pytest.approx(15.0)
    assert s["all_finite"] is True and s["n_nonfinite"] == 0
    # Plain Python values only: the dict is strict-JSON serialisable.
    json.dumps(s, allow_nan=False)
    assert all(type(v) in (float, int, str, bool, list) for v in s.values())


def test_real_input_is_amplitude_and_constant_batch_has_zero_variance():
    flat = np.full((5, 1, 8, 8), 0.7, dtype=np.float32)
    s = compute_patch_stats(flat, phase="inference", batch_idx=0, backend="tf", gridsize=1)
    assert s["var_zero_mean"] == pytest.approx(0.0, abs=1e-12)
    assert s["global_std"] == pytest.approx(0.0, abs=1e-7)
    assert s["global_mean"] == pytest.approx(0.7)
    neg = compute_patch_stats(-flat, phase="val", batch_idx=0, backend="tf", gridsize=1)
    assert neg["global_mean"] == pytest.approx(0.7)  # amplitude = |value|


def test_non_finite_values_are_reported_not_propagated():
    p = np.ones((2, 4, 4), dtype=np.complex64)
    p[0, 0, 0] = np.nan
    p[1] = np.inf
    s = compute_patch_stats(p, phase="train", batch_idx=0, backend="torch", gridsize=1)
    assert s["all_finite"] is False and s["n_nonfinite"] == 17
    assert s["global_mean"] == pytest.approx(1.0)
    assert s["per_patch"][1]["mean"] is None
    json.dumps(s, allow_nan=False)


def test_bad_arguments():
    p = np.ones((2, 4, 4))
    with pytest.raises(ValueError, match="phase must be one of"):
        compute_patch_stats(p, phase="training", batch_idx=0, backend="tf", gridsize=1)
    with pytest.raises(ValueError, match="backend"):
        compute_patch_stats(p, phase="train", batch_idx=0, backend="jax", gridsize=1)
    with pytest.raises(ValueError, match="square"):
        compute_patch_stats(np.ones((2, 4, 4, 3)), phase="train", batch_idx=0, backend="tf",
                            gridsize=1)
    with pytest.raises(ValueError, match="gridsize"):
        compute_patch_stats(p, phase="train", batch_idx=0, backend="tf", gridsize=0)
    with pytest.raises(ValueError, match="nothing to write"):
        PatchStatsLogger("unused", "tf", 1, limit=2).write()


def _luminance(img):
    return img[..., :3].mean(axis=-1) if img.ndim == 3 else img


def _tile_pixels(img, tile, inset=3):
    r0, r1, c0, c1 = tile["bbox_px"]
    return img[r0 + inset:r1 - inset, c0 + inset:c1 - inset]


def _patch_batch(rng, B, C, N):
    """Recognisable content: amplitude ramps along x, phase along y, plus noise."""
    yy, xx = np.mgrid[0:N, 0:N] / (N - 1)
    amp = 0.2 + 0.8 * xx + 0.05 * rng.random((B, C, N, N))
    ph = -1.0 + 2.0 * yy + 0.05 * rng.random((B, C, N, N))
    return (amp * np.exp(1j * ph)).astype(np.complex64)


def test_logger_limits_batches_and_writes_json_and_png(tmp_path):
    rng = np.random.default_rng(0)
    logger = PatchStatsLogger(tmp_path / "out", backend="torch", gridsize=2, limit=2, n_tiles=3)
    kept = []
    for phase in ("train", "val"):
        for b in range(4):
            kept.append(logger.log(_patch_batch(rng, 2, 4, 16), phase, b) is not None)
    assert kept == [True, True, False, False] * 2
    assert not logger.wants("train") and logger.wants("inference")
    result = logger.write()
    entries = json.loads((tmp_path / "out" / "torch_patch_stats.json").read_text())
    assert [(e["phase"], e["batch_idx"]) for e in entries] == [
        ("train", 0), ("train", 1), ("val", 0), ("val", 1)]
    assert all(e["var_zero_mean"] > 0.01 and e["gridsize"] == 2 for e in entries)

    png = tmp_path / "out" / "torch_patch_grid.png"
    assert result["png"] == str(png)
    img = mpimg.imread(png)
    layout = result["layout"]
    assert list(img.shape[:2]) == layout["image_shape"]
    assert layout["phases"] == ["train", "val"]
    assert layout["n_rows"] == 4 and layout["n_cols"] == 3
    tiles = layout["tiles"]
    assert len(tiles) == 2 * 2 * 3  # phases x (amplitude, phase) x tiles
    lum = _luminance(img)
    assert lum.std() > 0.05
    for tile in tiles:
        px = _tile_pixels(lum, tile)
        assert px.size > 100 and px.std() > 0.1      # normalised tile, not uniform
        # Amplitude tiles brighten to the right (grey map), phase tiles change downwards.
        if tile["kind"] == "amplitude":
            assert px[:, -3:].mean() > px[:, :3].mean() + 0.5
            assert 0.15 < tile["vmin"] < 0.3 and tile["vmax"] > 0.95
        else:
            assert abs(px[-3:, :].mean() - px[:3, :].mean()) > 0.3
    # Outside the tiles (margins) the figure is white background.
    assert lum[-2:, :].mean() > 0.99


def test_logger_tf_names_and_rewrite(tmp_path):
    rng = np.random.default_rng(1)
    logger = PatchStatsLogger(tmp_path, backend="tf", gridsize=1, limit=1)
    logger.log(_patch_batch(rng, 3, 1, 8), "inference", 0)
    first = logger.write()
    assert first["json"].endswith("tf_patch_stats.json")
    assert first["png"].endswith("tf_patch_grid.png")
    assert len(first["layout"]["tiles"]) == 2 * 3
    logger.log(_patch_batch(rng, 3, 1, 8), "train", 0)
    second = logger.write()
    assert len(json.loads((tmp_path / "tf_patch_stats.json").read_text())) == 2
    assert second["layout"]["phases"] == ["train", "inference"]
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries


def test_render_patch_grid_direct(tmp_path):
    rng = np.random.default_rng(2)
    patches = _patch_batch(rng, 5, 1, 12)[:, 0]
    layout = render_patch_grid(patches, tmp_path / "grid.png", "five patches", max_tiles=4)
    img = _luminance(mpimg.imread(tmp_path / "grid.png"))
    assert len(layout["tiles"]) == 8 and layout["n_cols"] == 4
    for tile in layout["tiles"]:
        assert _tile_pixels(img, tile).std() > 0.1
