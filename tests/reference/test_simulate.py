"""simulate_scan: the forward model and photon statistics of the simulator."""

import hashlib

import numpy as np
import pytest

from ptycho.data.contract import PtychoData
from ptycho.objects import make_object
from ptycho.probe import default_probe
from ptycho.simulate import simulate_scan

N = 32


def _positions(ys, xs):
    return np.array([[y, x] for y in ys for x in xs], dtype=np.float64)


def _direct_counts(obj, probe, pos, nphotons):
    """Expected counts written out from the definition, for integer positions."""
    P = probe / np.sqrt(np.sum(np.abs(probe) ** 2)) * (N / 2)
    out = []
    for y, x in pos.astype(int):
        patch = obj[y - N // 2:y + N // 2, x - N // 2:x + N // 2]
        F = np.fft.fftshift(np.fft.fft2(P * patch, norm="ortho"))
        out.append((np.sqrt(nphotons) / (N / 2) * np.abs(F)) ** 2)
    return np.array(out)


def test_noise_free_matches_definition_and_returns_contract_data():
    obj = make_object("lines", (64, 64), np.random.default_rng(0))
    probe = default_probe(N) * 3.7  # not normalised on purpose
    pos = _positions([20, 30, 44], [18, 32, 46])
    data = simulate_scan(obj, probe, pos, 1e5, np.random.default_rng(1), noise=False)
    assert isinstance(data, PtychoData)
    assert data.diffraction.shape == (9, N, N) and data.diffraction.dtype == np.float32
    np.testing.assert_array_equal(data.ycoords, pos[:, 0])
    np.testing.assert_array_equal(data.xcoords, pos[:, 1])
    assert np.sum(np.abs(data.probe) ** 2) == pytest.approx((N / 2) ** 2, rel=1e-5)
    np.testing.assert_array_equal(data.object, obj)
    expected = _direct_counts(obj.astype(np.complex128), probe.astype(np.complex128), pos, 1e5)
    np.testing.assert_allclose(data.diffraction.astype(np.float64) ** 2, expected,
                               rtol=1e-4, atol=1e-3)


def test_transparent_object_puts_nphotons_in_every_pattern():
    obj = np.ones((80, 80), dtype=np.complex64) * np.exp(0.3j)
    pos = _positions([20.0, 40.25, 55.5], [20.0, 33.75, 60.0])  # sub-pixel too
    data = simulate_scan(obj, default_probe(N), pos, 2.5e4, np.random.default_rng(0), noise=False)
    sums = (data.diffraction.astype(np.float64) ** 2).sum(axis=(1, 2))
    integer = np.all(pos == np.round(pos), axis=1)
    np.testing.assert_allclose(sums[integer], 2.5e4, rtol=1e-6)
    # Sub-pixel extraction (Fourier, finite window) rings slightly at the window edge.
    np.testing.assert_allclose(sums[~integer], 2.5e4, rtol=1e-3)


def test_poisson_counts_are_integers_with_poisson_mean_and_variance():
    obj = make_object("grf", (48, 48), np.random.default_rng(2))
    pos = np.tile([[24.0, 24.0]], (400, 1))  # the same pattern measured 400 times
    clean = simulate_scan(obj, default_probe(N), pos[:1], 2e4, None, noise=False)
    noisy = simulate_scan(obj, default_probe(N), pos, 2e4, np.random.default_rng(3))
    counts = noisy.diffraction.astype(np.float64) ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    lam = clean.diffraction[0].astype(np.float64) ** 2
    bright = lam > 20
    assert bright.sum() > 10
    mean, var = counts.mean(axis=0), counts.var(axis=0, ddof=1)
    # Poisson: mean = variance = lambda (400 samples: a few % statistical error).
    np.testing.assert_allclose(mean[bright], lam[bright], rtol=0.1)
    assert np.median(var[bright] / lam[bright]) == pytest.approx(1.0, abs=0.12)
    assert counts.sum(axis=(1, 2)).mean() == pytest.approx(lam.sum(), rel=0.01)


def _digest(data):
    h = hashlib.sha256()
    for arr in (data.diffraction, data.xcoords, data.ycoords, data.probe, data.object):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def test_bitwise_deterministic_for_a_seed():
    obj = make_object("points", (64, 64), np.random.default_rng(0))
    pos = _positions([20.5, 30.0, 41.3], [20.0, 35.7, 43.0])
    runs = [simulate_scan(obj, default_probe(N), pos, 1e4, np.random.default_rng(s))
            for s in (7, 7, 8)]
    assert _digest(runs[0]) == _digest(runs[1])
    assert _digest(runs[0]) != _digest(runs[2])


def test_translation_invariance_and_interpolations():
    """Moving the object and the positions together leaves the patterns unchanged."""
    obj = make_object("grf", (72, 72), np.random.default_rng(4))
    pos = _positions([25.0, 40.0], [25.0, 38.0])
    a = simulate_scan(obj, default_probe(N), pos, 1e4, None, noise=False)
    shifted = np.roll(obj, (3, 5), axis=(0, 1))
    b = simulate_scan(shifted, default_probe(N), pos + [3, 5], 1e4, None, noise=False)
    np.testing.assert_allclose(a.diffraction, b.diffraction, rtol=1e-5, atol=1e-4)
    # Half-pixel positions: both interpolations give nearly the same band-limited patterns.
    half = pos + 0.5
    f = simulate_scan(obj, default_probe(N), half, 1e4, None, noise=False, interpolation="fourier")
    bl = simulate_scan(obj, default_probe(N), half, 1e4, None, noise=False,
                       interpolation="bilinear")
    rel = np.linalg.norm(f.diffraction - bl.diffraction) / np.linalg.norm(f.diffraction)
    assert 0 < rel < 0.05


def test_simulate_scan_errors():
    obj = np.ones((40, 40), dtype=np.complex64)
    probe = default_probe(N)
    pos = np.array([[20.0, 20.0]])
    with pytest.raises(ValueError, match="nphotons"):
        simulate_scan(obj, probe, pos, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"nphotons 0.001 is too low: 1 of 1 simulated patterns "
                                         r"recorded no photon"):
        simulate_scan(obj, probe, pos, 1e-3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="positions must have shape"):
        simulate_scan(obj, probe, pos[0], 1e3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="obj must be a 2-D"):
        simulate_scan(obj[None], probe, pos, 1e3, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        simulate_scan(obj, probe, pos, 1e3, 123)
    with pytest.raises(ValueError, match="objectGuess"):  # the patch leaves the object
        simulate_scan(obj, probe, np.array([[10.0, 20.0]]), 1e3, np.random.default_rng(0))
