"""ptycho.refine: the probe-shift forward model equals the reference physics, the gradient is the
derivative of the NLL, and refinement recovers an object from overlapping patterns."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import physics
from ptycho.objects import make_object
from ptycho.probe import default_probe
from ptycho.refine import ScanLikelihood, refine_object

N = 32
SCALE = 2.5


def scan(seed: int = 0, step: float = 4.0, shape=(72, 72)):
    """Noise-free counts of a smooth `lines` object on a jittered raster (sub-pixel positions)."""
    rng = np.random.default_rng(seed)
    obj = make_object("lines", shape, rng)
    probe = default_probe(N)
    grid = np.arange(N // 2 + 2, shape[0] - N // 2 - 2, step)
    pos = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    pos = pos + rng.uniform(-0.5, 0.5, pos.shape)
    patches = physics.extract_patches(obj, pos, N, "fourier")
    counts = (SCALE * physics.diffraction_amplitude(patches, probe)) ** 2
    return obj, probe, pos, counts.astype(np.float32)


def padded(like: ScanLikelihood, obj: np.ndarray) -> np.ndarray:
    out = np.zeros(like.padded_shape, np.complex64)
    out[like.inner] = obj
    return out


def test_probe_shift_forward_model_is_exact_for_integer_positions_and_a_flat_probe():
    obj, probe, pos, _ = scan()
    for positions, p in ((np.round(pos), probe), (pos, default_probe(N, quadratic_phase=0.0))):
        ref = (SCALE * physics.diffraction_amplitude(
            physics.extract_patches(obj, positions, N, "fourier"), p)) ** 2
        like = ScanLikelihood(ref, positions, p, SCALE, obj.shape)
        lam = like.expected_counts(padded(like, obj))
        rel = np.max(np.abs(lam - ref)) / np.max(ref)
        assert rel < 1e-3, f"expected counts differ from the reference by {rel:.2e} of the peak"


def test_probe_shift_forward_model_matches_the_reference_for_the_default_probe_at_n64():
    n = 64
    rng = np.random.default_rng(2)
    obj = make_object("lines", (120, 120), rng)
    probe = default_probe(n)
    pos = rng.uniform(40, 80, (12, 2))
    ref = (SCALE * physics.diffraction_amplitude(
        physics.extract_patches(obj, pos, n, "fourier"), probe)) ** 2
    like = ScanLikelihood(ref, pos, probe, SCALE, obj.shape)
    lam = like.expected_counts(padded(like, obj))
    # Shifting the probe instead of the object differs only where the product of the two
    # exceeds the Nyquist band: a few 1e-3 of the counts for the default defocused probe.
    assert np.sum(np.abs(lam - ref)) / np.sum(ref) < 1e-2
    assert np.max(np.abs(lam - ref)) / np.max(ref) < 1e-2


def test_exit_intensities_are_the_patches_seen_by_each_pattern():
    obj, probe, pos, counts = scan(step=6.0)
    like = ScanLikelihood(counts, pos, probe, SCALE, obj.shape)
    o = padded(like, obj)
    exit_i = like.exit_intensities(o)
    assert exit_i.shape == counts.shape and exit_i.dtype == np.float32
    assert like.patch_rows.shape == like.patch_cols.shape == (len(pos), N)
    # Parseval: the far fields carry the same photons as the exit waves
    assert float(exit_i.sum(dtype=np.float64)) == pytest.approx(like.predicted_total(o),
                                                                 rel=1e-5)
    # a unit object: every pattern sees the whole (sub-pixel shifted) probe
    flat = like.exit_intensities(np.ones(like.padded_shape, np.complex64))
    expected = SCALE ** 2 * float(np.sum(np.abs(probe) ** 2))
    np.testing.assert_allclose(flat.sum(axis=(1, 2)), expected, rtol=1e-4)
    # the patch of pattern m is the canvas under its rows and columns
    m = 3
    r0, c0 = like.patch_rows[m][0], like.patch_cols[m][0]
    mask = np.zeros(like.padded_shape, np.complex64)
    mask[r0:r0 + N, c0:c0 + N] = 1
    np.testing.assert_allclose(like.exit_intensities(mask)[m], flat[m], rtol=1e-5)
    assert float(like.exit_intensities(mask)[m + 1].sum()) < float(flat[m + 1].sum())


def test_gradient_is_the_derivative_of_the_nll():
    obj, probe, pos, counts = scan(step=6.0)
    rng = np.random.default_rng(1)
    like = ScanLikelihood(counts * 1.3, pos, probe, SCALE, obj.shape)   # away from the optimum
    base = padded(like, obj)
    la = np.log(np.maximum(np.abs(base), 0.3)).astype(np.float32)
    ph = np.angle(base).astype(np.float32)
    _, g_amp, g_phase = like.nll(la, ph)
    for g, which in ((g_amp, 0), (g_phase, 1)):
        d = (g / np.max(np.abs(g)) + 0.3 * rng.standard_normal(la.shape)).astype(np.float32)
        t = 1e-3
        shift = [np.zeros_like(la), np.zeros_like(la)]
        shift[which] = t * d
        f_plus = like.nll(la + shift[0], ph + shift[1], gradient=False)
        f_minus = like.nll(la - shift[0], ph - shift[1], gradient=False)
        numeric = (f_plus - f_minus) / (2 * t)
        analytic = float(np.sum(g.astype(np.float64) * d))
        assert numeric == pytest.approx(analytic, rel=1e-2), which


def test_probe_gradient_is_the_derivative_of_the_nll():
    obj, probe, pos, counts = scan(step=6.0)
    rng = np.random.default_rng(3)
    like = ScanLikelihood(counts * 1.3, pos, probe, SCALE, obj.shape)
    base = padded(like, obj)
    la = np.log(np.maximum(np.abs(base), 0.3)).astype(np.float32)
    ph = np.angle(base).astype(np.float32)
    g = like.nll(la, ph, gradient=False, probe_gradient=True)[1]
    p0 = like.probe.copy()
    for part in (1.0, 1j):                 # real and imaginary parts of every probe pixel
        d = (rng.standard_normal(p0.shape) * np.abs(p0) / np.abs(p0).max()).astype(np.float32)
        t = 3e-4 * float(np.abs(p0).max())  # central differences: O(t**2) truncation error
        values = []
        for sign in (1, -1):
            like.set_probe(p0 + sign * t * part * d)
            values.append(like.nll(la, ph, gradient=False))
        numeric = (values[0] - values[1]) / (2 * t)
        wirtinger = g.real if part == 1.0 else g.imag
        analytic = float(np.sum(2.0 * wirtinger.astype(np.float64) * d))
        assert numeric == pytest.approx(analytic, rel=1e-2), part
        like.set_probe(p0)


def test_probe_refinement_recovers_from_a_wrong_probe():
    obj, probe, pos, counts = scan()
    wrong = default_probe(N, quadratic_phase=1.2 * np.pi)
    wrong *= np.sqrt(np.sum(np.abs(probe) ** 2) / np.sum(np.abs(wrong) ** 2))

    def probe_corr(p):
        return abs(np.vdot(probe, p)) / np.linalg.norm(probe) / np.linalg.norm(p)

    fixed = refine_object(obj, np.sqrt(counts), pos, wrong, SCALE, steps=150)
    free = refine_object(obj, np.sqrt(counts), pos, wrong, SCALE, steps=150, refine_probe=True)
    assert np.array_equal(fixed.probe, np.asarray(wrong, np.complex64))
    assert free.nll_end < fixed.nll_end
    assert probe_corr(free.probe) > probe_corr(wrong) + 0.1, (probe_corr(wrong),
                                                              probe_corr(free.probe))


def test_refinement_from_a_flat_start_recovers_the_object():
    obj, probe, pos, counts = scan()
    start = np.ones(obj.shape, np.complex64)
    res = refine_object(start, np.sqrt(counts), pos, probe, SCALE, steps=150, learning_rate=0.05,
                        record_every=50)
    assert res.nll_end < res.nll_start
    assert [h["step"] for h in res.history] == [0, 50, 100, 150]
    like = ScanLikelihood(counts, pos, probe, SCALE, obj.shape)
    bright = (like.illumination()[like.inner] > 0.5)
    rec, truth = res.obj[bright], obj[bright]
    rec = rec * np.exp(-1j * np.angle(np.vdot(truth, rec)))
    amp_corr = np.corrcoef(np.abs(rec), np.abs(truth))[0, 1]
    phase_corr = np.corrcoef(np.angle(rec), np.angle(truth))[0, 1]
    assert amp_corr > 0.9 and phase_corr > 0.9, (amp_corr, phase_corr)
    # The flat start is far from the data: without steps nothing is learned.
    flat = refine_object(start, np.sqrt(counts), pos, probe, SCALE, steps=0)
    assert np.allclose(np.abs(flat.obj[bright]), flat.amplitude_factor, rtol=1e-5)
    assert flat.nll_start == flat.nll_end > res.nll_end


def test_pixels_no_pattern_sees_are_returned_unchanged():
    obj, probe, pos, counts = scan(step=6.0)
    canvas = np.full((obj.shape[0] + 20, obj.shape[1]), 0.7 + 0.1j, np.complex64)
    res = refine_object(canvas, np.sqrt(counts), pos, probe, SCALE, steps=3)
    assert np.array_equal(res.obj[-15:], canvas[-15:])
    assert not np.allclose(res.obj[:obj.shape[0]], canvas[:obj.shape[0]])


def test_positions_off_the_canvas_are_padded_not_clipped():
    obj, probe, pos, counts = scan(step=8.0)
    res = refine_object(np.ones((40, 40), np.complex64), np.sqrt(counts), pos, probe, SCALE,
                        steps=2)
    assert res.obj.shape == (40, 40) and np.all(np.isfinite(res.obj))


@pytest.mark.parametrize("change, message", [
    (dict(obj=np.ones((8, 8), np.float32)), "obj must be a complex"),
    (dict(diffraction=np.ones((3, N, N + 1))), "diffraction must be"),
    (dict(positions=np.zeros((2, 2))), "positions must be"),
    (dict(probe=np.ones((N // 2, N // 2), np.complex64)), "probe must be"),
    (dict(diffraction=np.full((3, N, N), np.nan)), "diffraction contains NaN"),
    (dict(diffraction=np.ones((0, N, N)), positions=np.zeros((0, 2))), "no diffraction"),
    (dict(steps=-1), "steps must be >= 0"),
    (dict(learning_rate=0.0), "learning_rate must be > 0"),
    (dict(intensity_scale=float("inf")), "intensity_scale must be > 0"),
])
def test_bad_input_is_reported(change, message):
    args = dict(obj=np.ones((64, 64), np.complex64), diffraction=np.ones((3, N, N)),
                positions=np.full((3, 2), 32.0), probe=default_probe(N), intensity_scale=1.0,
                steps=1, learning_rate=0.02)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        refine_object(args.pop("obj"), args.pop("diffraction"), args.pop("positions"),
                      args.pop("probe"), args.pop("intensity_scale"), **args)
