"""Fourier ``group_reassemble`` (shift-matrix form on both backends) against the NumPy
reference on the shapes the main parity grid does not reach: odd sides, no padding, a partial
footprint, real patches and a single member."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import physics

CASES = [(15, 0, 4, True), (16, 3, 9, False), (9, 1, 1, True), (12, 6, 4, False)]


def _case(N, C, real, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(2, C, N, N))
    if not real:
        p = p + 1j * rng.normal(size=(2, C, N, N))
    offsets = rng.uniform(-3, 3, size=(2, C, 2))
    footprint = (rng.random((N, N)) > 0.3).astype(np.float64)
    return p, offsets, footprint


@pytest.mark.parametrize("N,pad,C,real", CASES)
@pytest.mark.parametrize("precision", ["64", "32"])
def test_both_backends_match_reference(N, pad, C, real, precision):
    import tensorflow as tf
    import torch

    from ptycho import tf_helper
    from ptycho_torch import helper

    p, offsets, footprint = _case(N, C, real)
    ref = physics.group_reassemble(p, offsets, pad=pad, interpolation="fourier",
                                   footprint=footprint)
    if precision == "32":
        p = p.astype(np.float32 if real else np.complex64)
        offsets = offsets.astype(np.float32)
    got_torch = helper.group_reassemble(torch.from_numpy(p), torch.from_numpy(offsets), pad=pad,
                                        interpolation="fourier",
                                        footprint=torch.from_numpy(footprint)).numpy()
    got_tf = tf_helper.group_reassemble(tf.constant(p), tf.constant(offsets), pad=pad,
                                        interpolation="fourier", footprint=footprint).numpy()
    tol = 1e-12 if precision == "64" else 1e-5
    scale = np.abs(ref).max()
    for got in (got_torch, got_tf):
        assert got.dtype == p.dtype
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= tol * scale
