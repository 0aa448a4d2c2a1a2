"""Slow-phase correction from the diffraction centres of mass (``ptycho.com_phase``)."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.com_phase import _GradientSystem, centre_of_mass, com_phase_correction
from ptycho.physics import diffraction_amplitude, extract_patches, far_field
from ptycho.probe import default_probe

N = 32
H = W = 112


def _scene():
    """Object with fine amplitude/phase texture plus a slow phase bump, a probe with
    quadratic phase, and a raster of integer positions covering the middle of the canvas."""
    yy, xx = np.mgrid[:H, :W].astype(float)
    amp = 0.8 + 0.15 * np.sin(xx / 2.3) * np.cos(yy / 3.1)
    fine = 0.3 * np.sin((xx + yy) / 2.7)
    slow = 1.2 * np.exp(-((yy - 52) ** 2 + (xx - 60) ** 2) / (2 * 14.0 ** 2))
    probe = default_probe(N) * np.exp(1j * ((np.arange(N) - N / 2) ** 2 / (2 * N)))[None, :]
    g = np.arange(28, 85, 4, dtype=float)
    pos = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    truth = amp * np.exp(1j * (fine + slow))
    diffraction = diffraction_amplitude(extract_patches(truth, pos, N), probe)
    return truth, amp * np.exp(1j * fine), slow, diffraction, pos, probe


def _lit(pos):
    """Pixels near the middle of the scan, well inside its footprint."""
    mask = np.zeros((H, W), bool)
    lo, hi = pos.min(0).astype(int), pos.max(0).astype(int)
    mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1] = True
    return mask


def _phase_error_rms(obj, truth, mask):
    d = np.angle(obj * np.conj(truth))[mask]
    d = np.angle(np.exp(1j * (d - np.angle(np.mean(np.exp(1j * d))))))
    return float(np.sqrt(np.mean(d ** 2)))


def test_centre_of_mass_of_a_tilted_wave_is_its_spatial_frequency():
    k = np.array([3.0, -5.0]) / 64
    yy, xx = np.mgrid[:64, :64] - 32.0
    envelope = np.exp(-(yy ** 2 + xx ** 2) / (2 * 6.0 ** 2))
    psi = envelope * np.exp(2j * np.pi * (k[0] * yy + k[1] * xx))
    com = centre_of_mass(np.abs(far_field(psi[None])) ** 2)
    np.testing.assert_allclose(com[0], k, atol=1e-6)
    # and the first-moment theorem for a general wave: intensity-weighted phase gradient / 2π
    rng = np.random.default_rng(0)
    phase = np.cumsum(np.cumsum(rng.normal(0, 0.01, (64, 64)), 0), 1)
    psi = np.exp(-(yy ** 2 + xx ** 2) / (2 * 8.0 ** 2) + 1j * phase)
    I = np.abs(psi) ** 2
    gy, gx = np.gradient(np.unwrap(np.unwrap(phase, axis=0), axis=1))
    expected = np.array([np.sum(I * gy), np.sum(I * gx)]) / I.sum() / (2 * np.pi)
    np.testing.assert_allclose(centre_of_mass(np.abs(far_field(psi[None])) ** 2)[0], expected,
                               atol=2e-4)
    assert np.array_equal(centre_of_mass(np.zeros((2, 8, 8))), np.zeros((2, 2)))


def test_gradient_system_adjoint():
    rng = np.random.default_rng(1)
    seen = rng.random((20, 30)) > 0.3
    M, n = 5, 8
    rows = rng.integers(0, 12, (M, 1)) + np.arange(n)
    cols = rng.integers(0, 22, (M, 1)) + np.arange(n)
    w = rng.random((M, n, n)).astype(np.float32)
    for bin_ in (1, 2, 3):
        s = _GradientSystem(w, rows, cols, seen, 0.3, bin_)
        x = rng.standard_normal(len(s.index))
        y = rng.standard_normal(sum(s.sizes))
        assert s.matvec(x) @ y == pytest.approx(x @ s.rmatvec(y), rel=1e-10)


def test_recovers_the_slow_phase_and_keeps_the_amplitude():
    truth, start, slow, diffraction, pos, probe = _scene()
    res = com_phase_correction(start, diffraction, pos, probe, steps=2)
    mask = _lit(pos)
    before, after = _phase_error_rms(start, truth, mask), _phase_error_rms(res.obj, truth, mask)
    assert after < 0.25 * before, (before, after)
    assert res.residual_rms[-1] < 0.2 * res.residual_rms[0]
    assert len(res.residual_rms) == 3 and len(res.correction_range) == 2
    assert res.correction_range[0] > 0.5                   # the bump is 1.2 rad high
    np.testing.assert_allclose(np.abs(res.obj), np.abs(start), rtol=1e-5)
    assert res.obj.dtype == np.complex64 and res.obj.shape == start.shape
    # pixels no pattern sees are returned as given
    seen = np.zeros((H, W), bool)
    for y, x in pos.astype(int):
        seen[y - N // 2:y + N // 2, x - N // 2:x + N // 2] = True
    assert (~seen).any()
    np.testing.assert_array_equal(res.obj[~seen], start[~seen].astype(np.complex64))


def test_consistent_object_and_global_ramp_are_left_alone():
    truth, _, _, diffraction, pos, probe = _scene()
    res = com_phase_correction(truth, diffraction, pos, probe, steps=1)
    assert res.residual_rms[0] < 1e-4 and res.correction_range[0] < 1e-2
    # a phase ramp over the whole object is not a slow-phase error: it stays
    yy, xx = np.mgrid[:H, :W]
    tilted = truth * np.exp(1j * 0.03 * (xx - 0.5 * yy))
    res = com_phase_correction(tilted, diffraction, pos, probe, steps=1)
    assert res.correction_range[0] < 0.05
    assert _phase_error_rms(res.obj, tilted, _lit(pos)) < 0.01


def test_zero_steps_returns_the_object():
    truth, start, _, diffraction, pos, probe = _scene()
    res = com_phase_correction(start, diffraction, pos, probe, steps=0)
    np.testing.assert_allclose(res.obj, start.astype(np.complex64))
    assert len(res.residual_rms) == 1 and res.correction_range == []


@pytest.mark.parametrize("change, needle", [
    (dict(steps=-1), "steps must be >= 0"),
    (dict(smoothing=0.0), "smoothing must be > 0"),
    (dict(smoothing=float("inf")), "smoothing must be > 0"),
    (dict(positions=np.zeros((3, 2))), r"positions must be \(225, 2\)"),
    (dict(probe=np.ones((16, 16))), r"probe must be \(32, 32\)"),
    (dict(obj=np.ones((H, W))), "obj must be a complex"),
    (dict(diffraction=np.zeros((0, N, N)), positions=np.zeros((0, 2))),
     "no diffraction patterns"),
])
def test_bad_input_is_named(change, needle):
    _, start, _, diffraction, pos, probe = _scene()
    kwargs = dict(obj=start, diffraction=diffraction, positions=pos, probe=probe)
    kwargs.update(change)
    steps = {k: kwargs.pop(k) for k in ("steps", "smoothing") if k in kwargs}
    with pytest.raises(ValueError, match=f"com_phase_correction: {needle}"):
        com_phase_correction(kwargs["obj"], kwargs["diffraction"], kwargs["positions"],
                             kwargs["probe"], **steps)
