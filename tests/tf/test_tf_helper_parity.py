"""ptycho.tf_helper against the NumPy reference ptycho.physics (eager mode).

Tolerance criterion used throughout the TensorFlow tests: float32 results agree with the
reference when ``max|tf - ref| <= 1e-5 * max|ref|`` (relative to the largest absolute value of
the reference, so that near-zero pixels do not dominate). Gradients are compared with central
finite differences in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from ptycho import physics as P  # noqa: E402
from ptycho import tf_helper as T  # noqa: E402

RTOL = 1e-5


def rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def cplx(rng, shape, dtype=np.complex64):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)


def smooth_object(rng, H, W):
    """Band-limited complex test object (amplitude ~0.5..1, phase within ±1 rad)."""
    y, x = np.mgrid[0:H, 0:W] / max(H, W)
    amp = 0.75 + 0.25 * np.sin(2 * np.pi * (2 * x + 1.5 * y) + rng.uniform(0, 6))
    ph = np.cos(2 * np.pi * (1.3 * x - 2.1 * y) + rng.uniform(0, 6))
    return (amp * np.exp(1j * ph)).astype(np.complex64)


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
@pytest.mark.parametrize("kind", ["complex", "real"])
def test_translate_matches_reference(interp, kind):
    rng = np.random.default_rng(1)
    img = cplx(rng, (7, 16, 20))
    if kind == "real":
        img = img.real.copy()
    off = rng.uniform(-5, 5, size=(7, 2)).astype(np.float32)
    off[0] = (0.0, 0.0)
    off[1] = (2.0, -3.0)
    out = T.translate(img, off, interp)
    assert out.dtype == tf.as_dtype(img.dtype)
    assert rel_err(out, P.translate(img, off, interp)) < RTOL


def test_translate_sign_convention_integer_shift():
    img = np.zeros((1, 8, 8), np.float32)
    img[0, 2, 3] = 1.0
    for interp in ("bilinear", "fourier"):
        out = np.asarray(T.translate(img, np.array([[1.0, 2.0]], np.float32), interp))
        assert np.unravel_index(np.argmax(out[0]), (8, 8)) == (3, 5)
        assert abs(out[0, 3, 5] - 1.0) < 1e-5


def test_translate_leading_axes_and_float64_offsets():
    rng = np.random.default_rng(2)
    img = cplx(rng, (3, 4, 12, 12))
    off = rng.uniform(-3, 3, size=(3, 4, 2))
    out = T.translate(img, off)
    ref = P.translate(img.reshape(12, 12, 12), off.reshape(12, 2)).reshape(img.shape)
    assert rel_err(out, ref) < RTOL


def test_translate_count_mismatch_raises():
    img = np.zeros((4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="one offset per image"):
        T.translate(img, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="one offset per image"):
        T.translate(img, np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        T.translate(img, np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="interpolation"):
        T.translate(img, np.zeros((4, 2), np.float32), "cubic")


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
def test_extract_and_reassemble_match_reference(interp):
    rng = np.random.default_rng(3)
    obj = smooth_object(rng, 40, 52)
    pos = np.column_stack([rng.uniform(-4, 44, 9), rng.uniform(-4, 56, 9)])
    pos[0] = (20.0, 26.0)                                   # integer position: exact slice
    got = T.extract_patches(obj, pos, 16, interp)
    ref = P.extract_patches(obj, pos, 16, interp)
    assert rel_err(got, ref) < RTOL
    np.testing.assert_allclose(np.asarray(got)[0], obj[12:28, 18:34], atol=1e-5)
    fp = np.zeros((16, 16), np.float32)
    fp[4:12, 4:12] = 1
    for footprint in (None, fp):
        c, w = T.reassemble_patches(ref, pos, (40, 52), interp, footprint=footprint)
        rc, rw = P.reassemble_patches(ref, pos, (40, 52), interp, footprint=footprint)
        assert rel_err(c, rc) < RTOL and rel_err(w, rw) < RTOL
        assert rel_err(T.normalize_overlap(c, w), P.normalize_overlap(rc, rw)) < 1e-4


def test_extract_reassemble_identity_on_integer_grid():
    rng = np.random.default_rng(4)
    obj = smooth_object(rng, 32, 32)
    g = np.arange(8, 25, 4, dtype=np.float64)
    pos = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    patches = T.extract_patches(obj, pos, 16)
    c, w = T.reassemble_patches(patches, pos, (32, 32))
    back = np.asarray(T.normalize_overlap(c, w))
    np.testing.assert_allclose(back, obj, atol=1e-5)


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_group_reassemble_matches_reference(interp, gridsize):
    rng = np.random.default_rng(5 + gridsize)
    C, N = gridsize ** 2, 16
    patches = cplx(rng, (5, C, N, N))
    offsets = rng.uniform(-5, 5, size=(5, C, 2)).astype(np.float32)
    fp = np.zeros((N, N), np.float32)
    fp[4:12, 4:12] = 1
    for footprint, pad, thr in ((None, None, None), (fp, 3, None), (fp, None, 0.2)):
        got = T.group_reassemble(patches, offsets, pad=pad, interpolation=interp,
                                 footprint=footprint, threshold=thr)
        ref = P.group_reassemble(patches, offsets, pad=pad, interpolation=interp,
                                 footprint=footprint, threshold=thr)
        assert got.dtype == tf.complex64
        assert rel_err(got, ref) < RTOL


def test_group_reassemble_never_mixes_groups():
    """Group b's output depends only on group b, whatever the batch size."""
    rng = np.random.default_rng(6)
    patches = cplx(rng, (64, 4, 16, 16))
    offsets = rng.uniform(-4, 4, size=(64, 4, 2)).astype(np.float32)
    full = np.asarray(T.group_reassemble(patches, offsets))
    for b in (0, 31, 63):
        one = np.asarray(T.group_reassemble(patches[b:b + 1], offsets[b:b + 1]))
        np.testing.assert_allclose(full[b:b + 1], one, atol=1e-5)
    changed = patches.copy()
    changed[10] = 0
    out = np.asarray(T.group_reassemble(changed, offsets))
    np.testing.assert_allclose(np.delete(out, 10, 0), np.delete(full, 10, 0), atol=1e-6)


def test_group_reassemble_shape_errors():
    p = np.zeros((4, 4, 16, 16), np.complex64)
    with pytest.raises(ValueError, match="one offset per image"):
        T.group_reassemble(p, np.zeros((2, 4, 2), np.float32))
    with pytest.raises(ValueError, match="one offset per image"):
        T.group_reassemble(p, np.zeros((4, 1, 2), np.float32))
    with pytest.raises(ValueError, match="footprint"):
        T.group_reassemble(p, np.zeros((4, 4, 2), np.float32), footprint=np.ones((8, 8)))


def test_forward_model_and_statistics_match_reference():
    rng = np.random.default_rng(7)
    obj = cplx(rng, (3, 4, 32, 32))
    probe = cplx(rng, (32, 32))
    assert rel_err(T.illuminate(obj, probe), P.illuminate(obj, probe)) < RTOL
    psi = P.illuminate(obj, probe)
    assert rel_err(T.far_field(psi), P.far_field(psi)) < RTOL
    assert rel_err(T.diffraction_amplitude(obj, probe), P.diffraction_amplitude(obj, probe)) < RTOL
    F = np.asarray(T.far_field(psi))
    np.testing.assert_allclose(np.sum(np.abs(F) ** 2), np.sum(np.abs(psi) ** 2), rtol=1e-5)
    lam = rng.uniform(0, 50, size=(6, 8, 8)).astype(np.float32)
    lam[0, 0, 0] = 0.0
    K = rng.poisson(20, size=(6, 8, 8)).astype(np.float32)
    assert rel_err(T.poisson_nll(lam, K), P.poisson_nll(lam, K)) < RTOL
    assert rel_err(T.poisson_nll_full(lam, K), P.poisson_nll_full(lam, K)) < RTOL
    amps = np.sqrt(K)
    assert abs(float(T.mean_photons(amps)) - P.mean_photons(amps)) < 1e-9 * P.mean_photons(amps)
    assert abs(float(T.intensity_scale(1e6, 64)) - P.intensity_scale(1e6, 64)) < 1e-12
    f = P.normalization_factor(amps)
    assert abs(float(T.normalization_factor(amps)) - f) < 1e-9 * f
    assert rel_err(T.normalize_amplitudes(amps, f), P.normalize_amplitudes(amps, f)) < RTOL
    from ptycho.probe import normalize_probe
    assert rel_err(T.normalize_probe(probe), normalize_probe(probe)) < RTOL


def test_channels_helpers_and_central_block():
    x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    cf = T.to_channels_first(x)
    assert cf.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(np.asarray(T.to_channels_last(cf)), x)
    m = np.asarray(T.central_mask(16))
    assert m.sum() == 64 and m[4:12, 4:12].all()
    full = np.asarray(T.pad_to_full(np.ones((1, 8, 8, 1), np.float32), 16))[0, :, :, 0]
    np.testing.assert_array_equal(full, m)


# ------------------------------------------------------------------------- gradients (float64)
def _directional_check(fn, args, wrt, seed=0, h=1e-6):
    """Compare d/dt sum(w * fn(args + t v)) at t=0 from autodiff and central differences."""
    rng = np.random.default_rng(seed)
    args = [np.asarray(a) for a in args]
    out0 = np.asarray(fn(*args))
    w = rng.normal(size=out0.shape) + (1j * rng.normal(size=out0.shape) if np.iscomplexobj(out0) else 0)
    v = rng.normal(size=args[wrt].shape)
    if np.iscomplexobj(args[wrt]):
        v = v + 1j * rng.normal(size=args[wrt].shape)

    def scalar(a):
        o = fn(*[a if i == wrt else tf.constant(x) for i, x in enumerate(args)])
        return tf.reduce_sum(tf.math.real(tf.cast(o, tf.complex128) * tf.cast(tf.math.conj(w), tf.complex128)))

    x = tf.Variable(args[wrt])
    with tf.GradientTape() as tape:
        y = scalar(x)
    g = tape.gradient(y, x).numpy()
    auto = float(np.sum(np.real(np.conj(g) * v))) if np.iscomplexobj(g) else float(np.sum(g * v))
    plus = float(scalar(tf.constant(args[wrt] + h * v)))
    minus = float(scalar(tf.constant(args[wrt] - h * v)))
    fd = (plus - minus) / (2 * h)
    assert abs(auto - fd) <= 1e-6 * max(1.0, abs(fd)), (auto, fd)


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
def test_gradients_translate(interp):
    rng = np.random.default_rng(8)
    img = rng.normal(size=(3, 10, 10)) + 1j * rng.normal(size=(3, 10, 10))
    off = np.array([[0.3, -1.7], [2.45, 0.6], [-0.2, 0.15]])
    fn = lambda a, o: T.translate(a, o, interp)  # noqa: E731
    _directional_check(fn, [img, off], 0)
    _directional_check(fn, [img, off], 1)


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
def test_gradients_group_reassemble(interp):
    rng = np.random.default_rng(9)
    patches = rng.normal(size=(2, 4, 8, 8)) + 1j * rng.normal(size=(2, 4, 8, 8))
    off = rng.uniform(-2, 2, size=(2, 4, 2))
    fp = np.zeros((8, 8))
    fp[2:6, 2:6] = 1
    fn = lambda a, o: T.group_reassemble(a, o, interpolation=interp, footprint=fp)  # noqa: E731
    _directional_check(fn, [patches, off], 0)
    _directional_check(fn, [patches, off], 1)


def test_gradients_forward_and_nll():
    rng = np.random.default_rng(10)
    obj = rng.normal(size=(2, 8, 8)) + 1j * rng.normal(size=(2, 8, 8))
    probe = rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))
    K = rng.poisson(5, size=(2, 8, 8)).astype(np.float64)

    def nll(o, p):
        F = T.far_field(T.illuminate(o, p))
        lam = tf.math.real(F) ** 2 + tf.math.imag(F) ** 2 + 0.5
        return T.poisson_nll(lam, K)

    _directional_check(nll, [obj, probe], 0)
    _directional_check(nll, [obj, probe], 1)
    _directional_check(lambda p: T.normalize_probe(p), [probe], 0)
