"""Metrics and alignment (ptycho.metrics)."""

import math

import numpy as np
import pytest

from ptycho.metrics import (amplitude_scale, apply_shift, evaluate_reconstruction, frc,
                            frc_threshold, mae, mask_bounding_box, mse, psnr, register_shift,
                            remove_global_phase, remove_phase_ramp, ssim)
from ptycho.objects import make_object


@pytest.fixture(scope="module")
def truth():
    return make_object("grf", (64, 64), np.random.default_rng(0), correlation_length=2.0)


def test_basic_errors_on_known_arrays():
    a = np.array([[0.0, 1.0], [2.0, 3.0]])
    b = np.array([[1.0, 1.0], [0.0, 3.0]])
    assert mae(a, b) == pytest.approx(0.75)
    assert mse(a, b) == pytest.approx(1.25)
    assert mae(1j * np.ones(3), np.zeros(3)) == pytest.approx(1.0)
    assert psnr(a, b, data_range=3.0) == pytest.approx(10 * math.log10(9 / 1.25))
    assert psnr(a, a) == math.inf
    with pytest.raises(ValueError, match="same shape"):
        mse(a, b[:1])
    with pytest.raises(ValueError, match="real images"):
        psnr(a + 1j, b)


def test_identical_images(truth):
    res = evaluate_reconstruction(truth, truth)
    for part in ("amp", "phase"):
        assert res[f"{part}_mse"] == pytest.approx(0.0, abs=1e-12)
        assert res[f"{part}_mae"] == pytest.approx(0.0, abs=1e-6)
        assert res[f"{part}_ssim"] == pytest.approx(1.0, abs=1e-6)
        assert res[f"{part}_frc50"] == pytest.approx(0.5)     # never drops: Nyquist
        assert res[f"{part}_frc17"] == pytest.approx(0.5)
    freqs, curve = frc(np.abs(truth), np.abs(truth))
    assert freqs[-1] == pytest.approx(0.5) and np.all(np.diff(freqs) > 0)
    np.testing.assert_allclose(curve, 1.0, atol=1e-9)


def test_global_phase_offset_is_removed(truth):
    shifted = truth * np.exp(1j * 1.1)
    raw = evaluate_reconstruction(shifted, truth, align=False)
    aligned = evaluate_reconstruction(shifted, truth, align=True)
    assert raw["phase_mae"] == pytest.approx(1.1, abs=1e-4)
    assert aligned["phase_mae"] < 1e-5
    assert aligned["phase_offset"] == pytest.approx(-1.1, abs=1e-5)
    out, c = remove_global_phase(shifted, truth)
    np.testing.assert_allclose(out, truth, atol=1e-5)


def test_amplitude_scale_is_removed(truth):
    scaled = 0.37 * truth
    raw = evaluate_reconstruction(scaled, truth, align=False)
    aligned = evaluate_reconstruction(scaled, truth)
    assert raw["amp_mae"] > 0.3
    assert aligned["amp_mae"] < 1e-5
    assert aligned["amplitude_scale"] == pytest.approx(1 / 0.37, rel=1e-5)
    _, s = amplitude_scale(np.abs(scaled), np.abs(truth))
    assert s == pytest.approx(1 / 0.37, rel=1e-6)


def test_phase_ramp_is_removed(truth):
    yy, xx = np.indices(truth.shape)
    ramped = truth * np.exp(1j * (0.4 + 0.03 * yy - 0.05 * xx))
    out, (a, b, c) = remove_phase_ramp(ramped, truth)
    assert (b, c) == pytest.approx((-0.03, 0.05), abs=1e-5)
    np.testing.assert_allclose(out, truth, atol=1e-4)
    only_offset = evaluate_reconstruction(ramped, truth)
    with_ramp = evaluate_reconstruction(ramped, truth, phase_ramp=True)
    assert only_offset["phase_mae"] > 0.3
    assert with_ramp["phase_mae"] < 1e-4
    assert with_ramp["phase_ramp"][1:] == pytest.approx([-0.03, 0.05], abs=1e-5)


def test_shift_is_detected_and_registered(truth):
    moved = apply_shift(truth, (2.3, -1.6))  # content moves +2.3 rows, -1.6 cols
    dy, dx = register_shift(moved, truth)
    assert (dy, dx) == pytest.approx((-2.3, 1.6), abs=0.06)
    np.testing.assert_allclose(apply_shift(moved, (dy, dx))[8:-8, 8:-8], truth[8:-8, 8:-8],
                               atol=0.05)
    plain = evaluate_reconstruction(moved, truth)
    reg = evaluate_reconstruction(moved, truth, register=True)
    assert reg["shift"] == pytest.approx([-2.3, 1.6], abs=0.06)
    assert reg["amp_ssim"] > 0.95 > plain["amp_ssim"]
    assert reg["phase_mae"] < 0.3 * plain["phase_mae"]


def test_pure_noise_has_low_frc_and_ssim(truth):
    rng = np.random.default_rng(1)
    noise = (rng.uniform(0.5, 1.0, truth.shape)
             * np.exp(1j * rng.uniform(-1.5, 1.5, truth.shape))).astype(np.complex64)
    res = evaluate_reconstruction(noise, truth)
    assert res["amp_ssim"] < 0.2 and res["phase_ssim"] < 0.2
    # The FRC of unrelated images falls below the thresholds within the first rings.
    assert res["amp_frc50"] < 0.06 and res["phase_frc50"] < 0.06
    freqs, curve = frc(np.abs(noise), np.abs(truth))
    assert np.abs(curve[5:]).mean() < 0.15


def test_noisy_reconstruction_frc_resolution():
    """Adding white noise costs the high frequencies first: FRC crossing moves down."""
    truth = make_object("grf", (128, 128), np.random.default_rng(2), correlation_length=2.0)
    rng = np.random.default_rng(3)
    results = []
    for sigma in (0.01, 0.1):
        noisy = truth + sigma * (rng.standard_normal(truth.shape)
                                 + 1j * rng.standard_normal(truth.shape))
        results.append(evaluate_reconstruction(noisy, truth))
    low, high = results
    assert 0 < high["amp_frc50"] < low["amp_frc50"]
    assert high["amp_frc17"] >= high["amp_frc50"]
    assert high["amp_psnr"] < low["amp_psnr"] and high["amp_ssim"] < low["amp_ssim"]


def test_frc_threshold_interpolates():
    f = np.array([0.1, 0.2, 0.3, 0.4])
    c = np.array([1.0, 0.8, 0.4, 0.1])
    assert frc_threshold(f, c, 0.5) == pytest.approx(0.275)
    assert frc_threshold(f, c, 0.05) == pytest.approx(0.4)
    assert frc_threshold(f, c, 1.5) == pytest.approx(0.1)


def test_mask_crops_to_scanned_region(truth):
    mask = np.zeros(truth.shape, dtype=bool)
    mask[10:40, 20:50] = True
    assert mask_bounding_box(mask) == (10, 40, 20, 50)
    recon = truth.copy()
    recon[~mask] = 0  # unscanned area is empty in a reconstruction
    res = evaluate_reconstruction(recon, truth, mask=mask)
    assert res["crop"] == [10, 40, 20, 50] and res["n_pixels"] == 900
    assert res["amp_mse"] == pytest.approx(0.0, abs=1e-12)
    assert res["amp_ssim"] == pytest.approx(1.0, abs=1e-6)
    full = evaluate_reconstruction(recon, truth)
    assert full["amp_mse"] > 0.01
    with pytest.raises(ValueError, match="mask selects no pixels"):
        evaluate_reconstruction(recon, truth, mask=np.zeros(truth.shape, dtype=bool))
    with pytest.raises(ValueError, match="mask must have shape"):
        evaluate_reconstruction(recon, truth, mask=mask[:5])


def test_evaluate_errors_and_ssim_small(truth):
    with pytest.raises(ValueError, match="same shape"):
        evaluate_reconstruction(truth[:10], truth)
    bad = truth.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_reconstruction(bad, truth)
    assert ssim(np.abs(truth[:5, :5]), np.abs(truth[:5, :5])) == pytest.approx(1.0)
