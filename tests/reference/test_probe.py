"""Default probe, probe normalisation and probe mask."""

import numpy as np
import pytest

from ptycho.probe import default_probe, normalize_probe, probe_mask, radius_map


@pytest.mark.parametrize("N", [32, 64, 128])
def test_default_probe_normalised_centred_disk(N):
    P = default_probe(N)
    assert P.shape == (N, N) and P.dtype == np.complex64
    assert np.sum(np.abs(P.astype(np.complex128)) ** 2) == pytest.approx((N / 2) ** 2, rel=1e-5)
    amp = np.abs(P)
    assert np.unravel_index(np.argmax(amp), amp.shape) == (N // 2, N // 2) or \
        amp[N // 2, N // 2] == pytest.approx(amp.max(), rel=1e-6)
    r = radius_map(N)
    R = N / 6
    # flat inside, half height at the nominal radius, negligible beyond a few edge widths
    inner = amp[r < R - 3]
    assert inner.min() > 0.99 * amp.max()
    assert amp[r > R + 4].max() < 1e-3 * amp.max()
    edge = (np.abs(r - R) < 0.5)
    assert np.all(np.abs(amp[edge] / amp.max() - 0.5) < 0.3)
    # symmetric about the centre pixel
    c = N // 2
    np.testing.assert_allclose(amp[c, c - 5:c], amp[c, c + 5:c:-1], rtol=1e-5)


def test_default_probe_phase_is_quadratic():
    N = 64
    P = default_probe(N, quadratic_phase=0.8)
    R = N / 6
    c = N // 2
    phase = np.angle(P[c, c:c + int(R)] / P[c, c])
    want = 0.8 * (np.arange(int(R)) / R) ** 2
    np.testing.assert_allclose(phase, want, atol=1e-5)
    flat = default_probe(N, quadratic_phase=0.0)
    assert np.abs(np.angle(flat[np.abs(flat) > 1e-3])).max() < 1e-6


def test_default_probe_options_and_validation():
    P = default_probe(64, diameter=30, edge_width=2.0)
    r = radius_map(64)
    assert np.abs(P[r < 10]).min() > 0.9 * np.abs(P).max()
    with pytest.raises(ValueError, match="diameter"):
        default_probe(64, diameter=0)
    with pytest.raises(ValueError, match="edge_width"):
        default_probe(64, edge_width=-1)
    with pytest.raises(ValueError, match="N must be a positive integer"):
        default_probe(0)


def test_normalize_probe():
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16))
    P = normalize_probe(raw)
    assert P.dtype == np.complex64
    assert np.sum(np.abs(P.astype(np.complex128)) ** 2) == pytest.approx(64.0, rel=1e-6)
    np.testing.assert_allclose(P / P[0, 0], raw / raw[0, 0], rtol=1e-5)  # only a real scale
    assert np.abs(P[0, 0]) / np.abs(raw[0, 0]) == pytest.approx(8 / np.sqrt(np.sum(np.abs(raw) ** 2)), rel=1e-6)
    np.testing.assert_allclose(normalize_probe(P), P, rtol=1e-6)
    # real input is accepted
    assert normalize_probe(np.ones((4, 4))).dtype == np.complex64
    with pytest.raises(ValueError, match="probeGuess is all zero"):
        normalize_probe(np.zeros((8, 8)), name="probeGuess")
    bad = raw.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="probe contains NaN"):
        normalize_probe(bad)
    with pytest.raises(ValueError, match="square"):
        normalize_probe(np.ones((4, 5)))


def test_probe_mask():
    m = probe_mask(64)
    assert m.dtype == np.float32 and m.shape == (64, 64)
    assert set(np.unique(m)) == {0.0, 1.0}
    assert m[32, 32] == 1 and m[32, 48] == 1 and m[32, 49] == 0 and m[16, 32] == 1 and m[15, 32] == 0
    assert m.sum() == pytest.approx(np.pi * 16**2, rel=0.05)
    # the default probe lives inside the mask
    P = default_probe(64)
    assert np.sum(np.abs(P * m) ** 2) / np.sum(np.abs(P) ** 2) > 0.999
