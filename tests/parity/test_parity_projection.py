"""``group_projection`` (overlap constraint + error-reduction projections): NumPy reference vs
TensorFlow vs PyTorch, forward within ``RTOL32`` in float32 and gradients TF vs torch, for
gridsize 1, 2 and 3, batch 1 and odd batches, both interpolations, with and without the
central footprint."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from tests.parity.test_parity_ops import check_op, fractional, tf_c, torch_c  # noqa: E402
from ptycho.probe import default_probe  # noqa: E402
from ptycho.projection import group_projection as np_projection  # noqa: E402
from ptycho.tf_projection import group_projection as tf_projection  # noqa: E402
from ptycho_torch.projection import group_projection as torch_projection  # noqa: E402

STEPS = 2


def _probe(N, rng):
    return default_probe(N) * np.exp(0.4j * rng.normal(size=(N, N)))


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
@pytest.mark.parametrize("gridsize,B,N,central", [(1, 1, 8, False), (2, 3, 8, False),
                                                  (2, 2, 16, True), (3, 1, 9, False)])
def test_group_projection(interp, gridsize, B, N, central):
    C = gridsize ** 2
    rng = np.random.default_rng(40 + 10 * gridsize + B)
    probe = _probe(N, rng)
    re, im = 1.0 + 0.3 * rng.normal(size=(B, C, N, N)), 0.3 * rng.normal(size=(B, C, N, N))
    amp = np.abs(rng.normal(size=(B, C, N, N))) + 0.1
    off = fractional(rng, (B, C, 2), -2.5, 2.5) if C > 1 else np.zeros((B, C, 2))
    fp = None
    if central:
        fp = np.zeros((N, N))
        fp[N // 4:N // 4 + N // 2, N // 4:N // 4 + N // 2] = 1.0
    kw = dict(interpolation=interp)

    def tf_fn(r, i, a):
        return tf_projection(tf_c(r, i), tf.constant(off, r.dtype),
                             tf.constant(probe, tf.complex128 if r.dtype == tf.float64 else tf.complex64),
                             a, STEPS, footprint=None if fp is None else tf.constant(fp, r.dtype), **kw)

    def torch_fn(r, i, a):
        return torch_projection(torch_c(r, i), torch.tensor(off, dtype=r.dtype),
                                torch.tensor(probe).to(torch.complex128 if r.dtype == torch.float64
                                                       else torch.complex64),
                                a, STEPS, footprint=None if fp is None else torch.tensor(fp, dtype=r.dtype),
                                **kw)

    check_op(lambda r, i, a: np_projection(r + 1j * i, off, probe, a, STEPS, footprint=fp, **kw),
             tf_fn, torch_fn, [re, im, amp], 40 + B,
             f"group_projection {interp} g={gridsize} B={B} N={N} central={central}")


def test_empty_batch_tf_and_torch():
    N, C = 8, 4
    probe = default_probe(N).astype(np.complex64)
    empty = np.zeros((0, C, N, N), np.complex64)
    out_t = torch_projection(torch.tensor(empty), torch.zeros(0, C, 2), torch.tensor(probe),
                             torch.zeros(0, C, N, N), 3)
    out_tf = tf_projection(tf.constant(empty), tf.zeros((0, C, 2)), tf.constant(probe),
                           tf.zeros((0, C, N, N)), 3)
    assert tuple(out_t.shape) == (0, C, N, N) and tuple(out_tf.shape) == (0, C, N, N)
