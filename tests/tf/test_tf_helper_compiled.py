"""ptycho.tf_helper in eager mode, inside tf.function and with XLA (jit_compile=True).

Every op runs for batch sizes 1, 7, 16, 64 and gridsize 1, 2, 3 in all three modes (XLA's
cross product lives in test_tf_helper_xla.py, to keep each file short) and must
match the NumPy reference (``max|tf - ref| <= 1e-5 * max|ref|``); gradients must be finite
under XLA; an empty batch returns an empty result in every mode.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from ptycho import physics as P  # noqa: E402
from ptycho import tf_helper as T  # noqa: E402

N = 16
RTOL = 1e-5
BATCHES = (1, 7, 16, 64)


def rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def chain(patches, offsets, probe, counts, interpolation):
    """Every differentiable op of the model's physics, in model order, plus translate."""
    obj = T.group_reassemble(patches, offsets, interpolation=interpolation)
    F = T.far_field(T.illuminate(obj, probe))
    lam = tf.math.real(F) ** 2 + tf.math.imag(F) ** 2
    nll = T.poisson_nll(lam, counts)
    moved = T.translate(tf.reshape(patches, [-1, N, N]), tf.reshape(offsets, [-1, 2]), interpolation)
    return obj, lam, nll, moved


def reference(patches, offsets, probe, counts, interpolation):
    obj = P.group_reassemble(patches, offsets, interpolation=interpolation)
    lam = np.abs(P.far_field(P.illuminate(obj, probe))) ** 2
    nll = P.poisson_nll(lam, counts)
    moved = P.translate(patches.reshape(-1, N, N), offsets.reshape(-1, 2), interpolation)
    return obj, lam, nll, moved


def make_inputs(B, gridsize, seed):
    rng = np.random.default_rng(seed)
    C = gridsize ** 2
    y, x = np.mgrid[0:N, 0:N] / N
    base = (0.8 + 0.2 * np.cos(2 * np.pi * (x + y))) * np.exp(0.5j * np.sin(2 * np.pi * x))
    patches = (base[None, None] * rng.uniform(0.5, 1.0, (B, C, 1, 1))).astype(np.complex64)
    offsets = rng.uniform(-3, 3, size=(B, C, 2)).astype(np.float32)
    probe = np.exp(-((np.arange(N) - N // 2) ** 2)[:, None] / 20.0
                   - ((np.arange(N) - N // 2) ** 2)[None, :] / 20.0).astype(np.complex64)
    # Counts drawn from the reference intensity (scaled to ~1e4 photons per pattern): where the
    # expected intensity is ~0 the counts are 0, as in a real measurement.
    lam = np.abs(P.far_field(P.illuminate(P.group_reassemble(patches, offsets), probe))) ** 2
    counts = rng.poisson(lam * 100.0).astype(np.float32) / np.float32(100.0)
    return patches, offsets, probe, counts


MODES = {
    "eager": lambda f, sig=None: f,
    # tf.function with an unknown batch dimension: one trace serves every batch size.
    "function": lambda f, sig=None: tf.function(f, input_signature=sig),
    # XLA compiles per concrete shape, so every batch size is compiled separately.
    "xla": lambda f, sig=None: tf.function(f, jit_compile=True),
}


def both(p, o, pr, k):
    return chain(p, o, pr, k, "bilinear") + chain(p, o, pr, k, "fourier")


def check_all_batch_sizes_and_gridsizes(mode):
    for gridsize in (1, 2, 3):
        C = gridsize ** 2
        sig = [tf.TensorSpec((None, C, N, N), tf.complex64), tf.TensorSpec((None, C, 2), tf.float32),
               tf.TensorSpec((N, N), tf.complex64), tf.TensorSpec((None, C, N, N), tf.float32)]
        fn = MODES[mode](both, sig)
        for B in BATCHES:
            args = make_inputs(B, gridsize, seed=B * 10 + gridsize)
            got = fn(*[tf.constant(a) for a in args])
            want = reference(*args, "bilinear") + reference(*args, "fourier")
            names = [f"{i}:{n}" for i in ("bilinear", "fourier")
                     for n in ("obj", "lam", "nll", "translate")]
            for name, g, w in zip(names, got, want):
                err = rel_err(g, w)
                assert err < RTOL, f"{mode} g={gridsize} B={B} {name}: {err}"


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_all_batch_sizes_and_gridsizes(mode):
    check_all_batch_sizes_and_gridsizes(mode)


@pytest.mark.parametrize("mode", list(MODES))
def test_empty_batch(mode):
    fn = MODES[mode](both)
    args = make_inputs(0, 2, seed=0)
    out = fn(*[tf.constant(a) for a in args])
    assert [tuple(t.shape) for t in out] == ([(0, 4, N, N)] * 3 + [(0, N, N)]) * 2
    ext = MODES[mode](lambda o, pos: T.extract_patches(o, pos, N))
    assert tuple(ext(tf.zeros((32, 32), tf.complex64), tf.zeros((0, 2), tf.float64)).shape) == (0, N, N)


def test_extract_and_reassemble_under_xla():
    rng = np.random.default_rng(1)
    obj = (rng.normal(size=(40, 40)) + 1j * rng.normal(size=(40, 40))).astype(np.complex64)
    pos = rng.uniform(5, 35, size=(7, 2))
    for interpolation in ("bilinear", "fourier"):
        ext = tf.function(lambda o, p: T.extract_patches(o, p, N, interpolation), jit_compile=True)
        got = ext(tf.constant(obj), tf.constant(pos))
        ref = P.extract_patches(obj, pos, N, interpolation)
        assert rel_err(got, ref) < RTOL
        rea = tf.function(lambda q, p: T.reassemble_patches(q, p, (40, 40), interpolation),
                          jit_compile=True)
        c, w = rea(tf.constant(ref), tf.constant(pos))
        rc, rw = P.reassemble_patches(ref, pos, (40, 40), interpolation)
        assert rel_err(c, rc) < RTOL and rel_err(w, rw) < RTOL


def test_gradients_finite_under_xla_with_unknown_batch():
    """One XLA function with a None batch dimension, differentiated, for several batch sizes."""
    spec = [tf.TensorSpec((None, 4, N, N), tf.complex64), tf.TensorSpec((None, 4, 2), tf.float32),
            tf.TensorSpec((N, N), tf.complex64), tf.TensorSpec((None, 4, N, N), tf.float32)]

    @tf.function(jit_compile=True, input_signature=spec)
    def grads(p, o, pr, k):
        with tf.GradientTape() as tape:
            tape.watch([p, o])
            _, _, nll, _ = chain(p, o, pr, k, "bilinear")
            loss = tf.reduce_mean(nll)
        return tape.gradient(loss, [p, o])

    for B in (1, 7):
        gp, go = grads(*[tf.constant(a) for a in make_inputs(B, 2, seed=B)])
        assert gp.shape == (B, 4, N, N) and go.shape == (B, 4, 2)
        assert np.all(np.isfinite(gp.numpy())) and np.all(np.isfinite(go.numpy()))
        assert np.any(gp.numpy() != 0) and np.any(go.numpy() != 0)


def test_mismatched_counts_rejected_inside_tf_function():
    @tf.function
    def f(img, off):
        return T.translate(img, off)

    with pytest.raises(ValueError, match="one offset per image"):
        f(tf.zeros((4, N, N)), tf.zeros((3, 2)))
