"""Every physics op: NumPy reference vs TensorFlow vs PyTorch on the same inputs.

Forward: TF and torch float32 results within ``RTOL32 = 1e-5`` of the NumPy reference,
relative to the reference's max |value|. Gradients: TF GradientTape and torch autograd of the
same scalar loss agree within ``1e-5`` in float32 and ``1e-10`` in float64. Sizes cover batch 1,
odd batches, odd image and patch sides, gridsize 1, 2 and 3 (C = 1, 4, 9).
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from tests.parity.parity_tools import (RTOL32, RTOL64, assert_close, loss_weights,  # noqa: E402
                          rel_err, tf_value_and_grads, torch_value_and_grads)
from ptycho import physics as P  # noqa: E402
from ptycho import tf_helper as T  # noqa: E402
from ptycho.probe import default_probe, normalize_probe  # noqa: E402
from ptycho_torch import helper as H  # noqa: E402


def tf_c(re, im):
    return tf.complex(re, im)


def torch_c(re, im):
    return torch.complex(re, im)


def check_op(np_fn, tf_fn, torch_fn, inputs, seed, what):
    """Forward against NumPy (float32) and gradients TF vs torch (float32 and float64)."""
    inputs32 = [np.asarray(x, np.float32) for x in inputs]
    ref = np.asarray(np_fn(*inputs32))
    weights = loss_weights(np.random.default_rng(seed + 1000), ref.shape)
    out_tf, g_tf = tf_value_and_grads(tf_fn, inputs32, weights, "float32")
    out_t, g_t = torch_value_and_grads(torch_fn, inputs32, weights, "float32")
    assert out_tf.dtype in (np.float32, np.complex64) and out_t.dtype in (np.float32, np.complex64)
    assert_close(out_tf, ref, RTOL32, f"{what}: TF forward vs NumPy")
    assert_close(out_t, ref, RTOL32, f"{what}: torch forward vs NumPy")
    for i, (a, b) in enumerate(zip(g_tf, g_t)):
        assert np.max(np.abs(b)) > 0, f"{what}: gradient of input {i} is identically zero"
        assert_close(a, b, RTOL32, f"{what}: float32 gradient of input {i}, TF vs torch")
    inputs64 = [np.asarray(x, np.float64) for x in inputs]
    out_tf64, g_tf64 = tf_value_and_grads(tf_fn, inputs64, weights, "float64")
    out_t64, g_t64 = torch_value_and_grads(torch_fn, inputs64, weights, "float64")
    assert_close(out_tf64, out_t64, RTOL64, f"{what}: float64 forward, TF vs torch")
    for i, (a, b) in enumerate(zip(g_tf64, g_t64)):
        assert_close(a, b, RTOL64, f"{what}: float64 gradient of input {i}, TF vs torch")


def fractional(rng, shape, lo, hi):
    """Uniform values in [lo, hi) kept at least 0.05 px away from integers (the bilinear hat
    kernel has a kink there, where the one-sided derivatives of the frameworks may differ)."""
    x = rng.uniform(lo, hi, size=shape)
    f = x - np.floor(x)
    return np.where(f < 0.05, x + 0.1, np.where(f > 0.95, x - 0.1, x))


# ---------------------------------------------------------------------------------- translate
@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
@pytest.mark.parametrize("shape", [(1, 9, 13), (5, 12, 7)])
def test_translate_complex(interp, shape):
    rng = np.random.default_rng(1)
    re, im = rng.normal(size=shape), rng.normal(size=shape)
    off = fractional(rng, (shape[0], 2), -3.5, 3.5)
    check_op(lambda r, i, o: P.translate(r + 1j * i, o, interp),
             lambda r, i, o: T.translate(tf_c(r, i), o, interp),
             lambda r, i, o: H.translate(torch_c(r, i), o, interp),
             [re, im, off], 1, f"translate {interp} complex {shape}")


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
def test_translate_real(interp):
    rng = np.random.default_rng(2)
    img = rng.normal(size=(3, 11, 10))
    off = fractional(rng, (3, 2), -2.5, 2.5)
    check_op(lambda x, o: P.translate(x, o, interp),
             lambda x, o: T.translate(x, o, interp),
             lambda x, o: H.translate(x, o, interp),
             [img, off], 2, f"translate {interp} real")


# ---------------------------------------------------------------------------------- extract
@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
@pytest.mark.parametrize("M,N", [(1, 8), (3, 9)])
def test_extract_patches(interp, M, N):
    rng = np.random.default_rng(3 + M)
    H_, W_ = 27, 31
    re, im = rng.normal(size=(H_, W_)), rng.normal(size=(H_, W_))
    pos = np.stack([fractional(rng, M, N / 2 + 1, H_ - N / 2 - 1),
                    fractional(rng, M, 2.0, W_ - 2.0)], axis=1)       # some patches cross the edge
    check_op(lambda r, i, p: P.extract_patches(r + 1j * i, p, N, interp),
             lambda r, i, p: T.extract_patches(tf_c(r, i), p, N, interp),
             lambda r, i, p: H.extract_patches(torch_c(r, i), p, N, interp),
             [re, im, pos], 3 + M, f"extract_patches {interp} M={M} N={N}")


# ---------------------------------------------------------------------------------- group_reassemble
@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
@pytest.mark.parametrize("gridsize,B,N", [(1, 1, 8), (2, 3, 8), (3, 1, 9), (3, 2, 8)])
def test_group_reassemble(interp, gridsize, B, N):
    C = gridsize ** 2
    rng = np.random.default_rng(10 * gridsize + B)
    re, im = rng.normal(size=(B, C, N, N)), rng.normal(size=(B, C, N, N))
    off = fractional(rng, (B, C, 2), -2.5, 2.5)
    check_op(lambda r, i, o: P.group_reassemble(r + 1j * i, o, interpolation=interp),
             lambda r, i, o: T.group_reassemble(tf_c(r, i), o, interpolation=interp),
             lambda r, i, o: H.group_reassemble(torch_c(r, i), o, interpolation=interp),
             [re, im, off], 10 * gridsize + B, f"group_reassemble {interp} g={gridsize} B={B}")


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
def test_group_reassemble_central_footprint(interp):
    """The footprint the model uses without probe_big: the central N/2 x N/2 block."""
    B, C, N = 3, 4, 16
    rng = np.random.default_rng(21)
    fp = np.zeros((N, N))
    fp[N // 4:N // 4 + N // 2, N // 4:N // 4 + N // 2] = 1.0
    re, im = rng.normal(size=(B, C, N, N)) * fp, rng.normal(size=(B, C, N, N)) * fp
    off = fractional(rng, (B, C, 2), -3.0, 3.0)
    check_op(lambda r, i, o: P.group_reassemble(r + 1j * i, o, interpolation=interp, footprint=fp),
             lambda r, i, o: T.group_reassemble(tf_c(r, i), o, interpolation=interp,
                                                footprint=tf.constant(fp, r.dtype)),
             lambda r, i, o: H.group_reassemble(torch_c(r, i), o, interpolation=interp,
                                                footprint=torch.tensor(fp, dtype=r.dtype)),
             [re, im, off], 21, f"group_reassemble {interp} central footprint")


# ---------------------------------------------------------------------------------- forward model
@pytest.mark.parametrize("B,C,N", [(1, 1, 8), (3, 4, 9), (1, 9, 16)])
def test_illuminate_far_field(B, C, N):
    rng = np.random.default_rng(30 + C)
    ore, oim = rng.normal(size=(B, C, N, N)), rng.normal(size=(B, C, N, N))
    pre, pim = rng.normal(size=(N, N)), rng.normal(size=(N, N))
    check_op(lambda a, b, c, d: P.far_field(P.illuminate(a + 1j * b, c + 1j * d)),
             lambda a, b, c, d: T.far_field(T.illuminate(tf_c(a, b), tf_c(c, d))),
             lambda a, b, c, d: H.far_field(H.illuminate(torch_c(a, b), torch_c(c, d))),
             [ore, oim, pre, pim], 30 + C, f"far_field(illuminate) B={B} C={C} N={N}")


@pytest.mark.parametrize("B,C,N", [(1, 1, 8), (3, 4, 9)])
def test_diffraction_amplitude(B, C, N):
    rng = np.random.default_rng(40 + C)
    ore, oim = rng.normal(size=(B, C, N, N)), rng.normal(size=(B, C, N, N))
    pre, pim = rng.normal(size=(N, N)), rng.normal(size=(N, N))
    check_op(lambda a, b, c, d: P.diffraction_amplitude(a + 1j * b, c + 1j * d),
             lambda a, b, c, d: T.diffraction_amplitude(tf_c(a, b), tf_c(c, d)),
             lambda a, b, c, d: H.diffraction_amplitude(torch_c(a, b), torch_c(c, d)),
             [ore, oim, pre, pim], 40 + C, f"diffraction_amplitude B={B} C={C} N={N}")


# ---------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (3, 9, 7, 7)])
def test_poisson_nll(full, shape):
    rng = np.random.default_rng(50 + shape[1])
    lam = rng.uniform(0.5, 40.0, size=shape)
    lam.flat[::11] = 1e-10                                   # below the floor: clamped
    K = rng.poisson(lam + 1.0).astype(np.float64) + 0.25     # float counts (sqrt of data)^2
    np_fn = P.poisson_nll_full if full else P.poisson_nll
    tf_fn = T.poisson_nll_full if full else T.poisson_nll
    torch_fn = H.poisson_nll_full if full else H.poisson_nll
    check_op(np_fn, tf_fn, torch_fn, [lam, K], 50 + shape[1],
             f"poisson_nll{'_full' if full else ''} {shape}")


def test_intensity_scale_and_normalisation():
    rng = np.random.default_rng(60)
    amps = rng.uniform(0, 30, size=(7, 16, 16)).astype(np.float32)
    mp = P.mean_photons(amps)
    assert rel_err(float(T.mean_photons(amps)), mp) <= 1e-12
    s = P.intensity_scale(mp, 16)
    assert rel_err(float(T.intensity_scale(mp, 16)), s) <= 1e-12
    assert rel_err(H.intensity_scale(mp, 16), s) <= 1e-12
    f = P.normalization_factor(amps)
    assert rel_err(float(T.normalization_factor(amps)), f) <= 1e-12
    X = P.normalize_amplitudes(amps, f)
    assert_close(T.normalize_amplitudes(amps, f).numpy(), X, RTOL32, "normalize_amplitudes")
    # normalised input: mean over patterns of sum X^2 is (N/2)^2
    assert abs(float(np.mean(np.sum(X.astype(np.float64) ** 2, axis=(1, 2)))) - 64.0) < 1e-3


@pytest.mark.parametrize("probe_mask", [False, True])
def test_probe_normalisation_scale_and_targets(probe_mask):
    """Probe normalisation (and support mask), intensity scale and target counts ``(X·f)²``
    as the two models compute them, against NumPy; gradients of a loss of the effective probe
    with respect to the (trainable) probe weight, TF vs torch."""
    from ptycho.config import ModelConfig
    from ptycho.model import build_model
    from ptycho.probe import probe_mask as support
    from ptycho_torch.model import PtychoPINN

    N = 32
    rng = np.random.default_rng(70)
    probe = (default_probe(N) * (1.0 + 0.3 * rng.normal(size=(N, N)))).astype(np.complex64) * 7.0
    cfg = ModelConfig(N=N, probe_mask=probe_mask, probe_trainable=True)
    s, f = 2.5, 13.0
    m_tf = build_model(cfg, probe, s, f)
    m_t = PtychoPINN(cfg, probe, s, f)
    expected = normalize_probe(probe) * (support(N) if probe_mask else 1.0)
    w = rng.normal(size=(N, N)) + 1j * rng.normal(size=(N, N))
    with tf.GradientTape() as tape:
        p_tf = m_tf.effective_probe()
        loss_tf = tf.reduce_sum(tf.math.real(p_tf * tf.constant(w, tf.complex64)))
    g_tf = tape.gradient(loss_tf, m_tf.probe).numpy()
    p_t = m_t.effective_probe()
    loss_t = (p_t * torch.tensor(w, dtype=torch.complex64)).real.sum()
    (g_t,) = torch.autograd.grad(loss_t, m_t.probe)
    assert_close(p_tf.numpy(), expected, RTOL32, "TF effective probe vs NumPy")
    assert_close(p_t.detach().numpy(), expected, RTOL32, "torch effective probe vs NumPy")
    assert_close(g_tf, g_t.numpy(), RTOL32, "effective-probe gradient, TF vs torch")
    assert rel_err(m_tf.intensity_scale_value(), s) <= 1e-6
    assert rel_err(m_t.intensity_scale_value(), s) <= 1e-6
    X = rng.uniform(0, 3, size=(2, 1, N, N)).astype(np.float32)
    K = (X.astype(np.float64) * f) ** 2
    assert_close(m_tf.target_counts(X).numpy(), K, RTOL32, "TF target counts")
    assert_close(m_t.target_counts(torch.from_numpy(X)).numpy(), K, RTOL32, "torch target counts")
