"""Shared PNG helpers (ptycho.plotting)."""

import matplotlib.image as mpimg
import numpy as np
import pytest

from ptycho.objects import make_object
from ptycho.plotting import (save_complex_image_png, save_loss_curve_png,
                             save_refinement_png, save_simulation_preview_png)


def _assert_real_png(path, min_side=100):
    img = mpimg.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side
    assert img[..., :3].std() > 0.05  # a picture, not a blank canvas
    return img


def test_complex_image_pngs(tmp_path):
    obj = make_object("lines", (40, 80), np.random.default_rng(0))
    amp, ph = save_complex_image_png(obj, tmp_path / "a" / "amp.png", tmp_path / "phase.png",
                                     "recon")
    assert amp == tmp_path / "a" / "amp.png"
    a = _assert_real_png(amp)
    p = _assert_real_png(ph)
    assert a.shape[1] > a.shape[0]  # wide object -> wide figure
    assert not np.array_equal(a, p)
    with pytest.raises(ValueError, match="NaN"):
        save_complex_image_png(np.full((4, 4), np.nan), tmp_path / "x.png", tmp_path / "y.png", "t")
    with pytest.raises(ValueError, match="2-D"):
        save_complex_image_png(np.ones(4), tmp_path / "x.png", tmp_path / "y.png", "t")


def test_loss_curve_png(tmp_path):
    path = save_loss_curve_png({"loss": [5.0, 2.0, 1.0, 0.5], "val_loss": [6.0, 3.0, float("nan"),
                                                                           0.9]},
                               tmp_path / "loss.png")
    _assert_real_png(path)
    # Negative values (Poisson NLL without log K!) plot on a linear axis.
    _assert_real_png(save_loss_curve_png({"loss": [-1.0, -3.0]}, tmp_path / "neg.png"))
    with pytest.raises(ValueError, match="empty"):
        save_loss_curve_png({}, tmp_path / "e.png")
    with pytest.raises(ValueError, match="no finite values"):
        save_loss_curve_png({"loss": [float("nan")]}, tmp_path / "e.png")


def test_refinement_png(tmp_path):
    history = [{"step": 0, "nll": -100.0}, {"step": 5, "nll": -180.0},
               {"step": 10, "nll": -199.0}, {"step": 12, "nll": -200.0}]
    _assert_real_png(save_refinement_png(history, tmp_path / "r.png"))
    with pytest.raises(ValueError, match="at least 2 entries"):
        save_refinement_png(history[:1], tmp_path / "r.png")
    with pytest.raises(ValueError, match="no NLL above the final value"):
        save_refinement_png([{"step": 0, "nll": -5.0}, {"step": 3, "nll": -4.0}],
                            tmp_path / "r.png")


def test_simulation_preview_png(tmp_path):
    rng = np.random.default_rng(0)
    obj = make_object("grf", (60, 60), rng)
    probe = np.ones((16, 16), dtype=np.complex64)
    diff = rng.random((7, 16, 16)).astype(np.float32)
    pos = rng.uniform(10, 50, (7, 2))
    _assert_real_png(save_simulation_preview_png(obj, probe, diff, pos, tmp_path / "p.png",
                                                 "preview"))
    with pytest.raises(ValueError, match="positions must have shape"):
        save_simulation_preview_png(obj, probe, diff, pos[:3], tmp_path / "p.png", "t")
