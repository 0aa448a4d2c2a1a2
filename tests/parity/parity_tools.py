"""Helpers of the parity suite: the tolerance criterion and TF/torch gradient evaluation.

Tolerance criterion (docs/parity.md): two float32 results agree when
``max|a - b| <= rtol * max|b|`` -- the error relative to the largest absolute value of the
reference, so pixels near zero do not dominate. Gradients are compared on one real scalar loss
evaluated by both frameworks on the same inputs; complex inputs enter as separate real and
imaginary tensors so that both frameworks differentiate with respect to real variables (their
conventions for complex gradients differ).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

#: Batches per phase for which the CLI runs of the suite log patch statistics.
STATS_LIMIT = 2
RTOL32 = 1e-5      # float32 results, relative to the reference's max |value|
RTOL64 = 1e-10     # the same computation in float64 on both frameworks


def rel_err(actual, expected) -> float:
    """``max|actual - expected| / max|expected|`` (shapes must match)."""
    a = np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, (a.shape, e.shape)
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    err = float(np.max(np.abs(a - e))) if e.size else 0.0
    return err / scale if scale > 0 else err


def assert_close(actual, expected, rtol: float, what: str) -> None:
    err = rel_err(actual, expected)
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"


def loss_weights(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
    """Seeded weights (w, v) of the scalar test loss for an output of ``shape``."""
    return rng.normal(size=shape), rng.normal(size=shape)


def tf_value_and_grads(fn: Callable, inputs: Sequence[np.ndarray], weights, dtype: str):
    """Evaluate ``fn(*inputs)`` in TensorFlow and the gradient of
    ``L = Σ w·Re(out) + Σ v·Im(out) + 0.5·Σ|out|²`` with respect to each input.

    Inputs are real arrays (complex ones are passed as pairs by the caller); returns
    ``(out as numpy, [grad as numpy, ...])``.
    """
    import tensorflow as tf

    ts = [tf.constant(np.asarray(x), dtype=dtype) for x in inputs]
    w, v = (tf.constant(np.asarray(a), dtype=dtype) for a in weights)
    with tf.GradientTape() as tape:
        for t in ts:
            tape.watch(t)
        out = fn(*ts)
        re = tf.math.real(out) if out.dtype.is_complex else out
        im = tf.math.imag(out) if out.dtype.is_complex else tf.zeros_like(out)
        loss = tf.reduce_sum(w * re) + tf.reduce_sum(v * im) + 0.5 * tf.reduce_sum(re * re + im * im)
    grads = tape.gradient(loss, ts)
    return out.numpy(), [g.numpy() for g in grads]


def torch_value_and_grads(fn: Callable, inputs: Sequence[np.ndarray], weights, dtype: str):
    """The same as :func:`tf_value_and_grads` with PyTorch autograd."""
    import torch

    tdtype = getattr(torch, dtype)
    ts = [torch.tensor(np.asarray(x), dtype=tdtype, requires_grad=True) for x in inputs]
    w, v = (torch.tensor(np.asarray(a), dtype=tdtype) for a in weights)
    out = fn(*ts)
    re = out.real if out.is_complex() else out
    im = out.imag if out.is_complex() else torch.zeros_like(out)
    loss = (w * re).sum() + (v * im).sum() + 0.5 * (re * re + im * im).sum()
    grads = torch.autograd.grad(loss, ts)
    return out.detach().numpy(), [g.numpy() for g in grads]
