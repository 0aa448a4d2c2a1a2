"""TensorFlow version of ``ptycho.projection.group_projection`` (the overlap constraint followed
by per-group error-reduction projections onto the measured amplitudes); see that module for the
definition. Differentiable, usable eagerly, inside ``tf.function`` and under XLA, for any batch
size; groups never mix."""

from __future__ import annotations

import math

import tensorflow as tf

from ptycho import physics as _ref
from ptycho import tf_helper as th
from ptycho.projection import DEFAULT_LIT_FRACTION, MODULUS_FLOOR

__all__ = ["inverse_far_field", "group_projection"]


def inverse_far_field(F):
    """Inverse of ``tf_helper.far_field``: ``ifft2(ifftshift(F), norm="ortho")``."""
    F = tf.convert_to_tensor(F)
    h, w = F.shape[-2], F.shape[-1]
    scale = tf.cast(math.sqrt(h * w), F.dtype)
    return tf.signal.ifft2d(tf.signal.ifftshift(F, axes=(-2, -1))) * scale


def _matmul_rows_cols(images, wy, wx):
    """``wy @ images @ wx^T`` batched, in the matrices' dtype."""
    return tf.matmul(tf.matmul(wy, tf.cast(images, wy.dtype)), wx, transpose_b=True)


def group_projection(patches, offsets, probe, target_amplitude, steps: int, pad: int | None = None,
                     interpolation: str = "bilinear", footprint=None,
                     threshold: float | None = None, lit_fraction: float = DEFAULT_LIT_FRACTION):
    """patches (B, C, N, N) complex, offsets (B, C, 2), probe (N, N) complex, target_amplitude
    (B, C, N, N) real → (B, C, N, N) complex; ``steps = 0`` is ``tf_helper.group_reassemble``.
    Bilinear runs in double precision (as ``group_reassemble``), Fourier in the patches'."""
    th._check_interpolation(interpolation)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not 0.0 < float(lit_fraction) < 1.0:
        raise ValueError(f"lit_fraction must be in (0, 1), got {lit_fraction}")
    patches = tf.convert_to_tensor(patches)
    if steps == 0:
        return th.group_reassemble(patches, offsets, pad=pad, interpolation=interpolation,
                                   footprint=footprint, threshold=threshold)
    offsets = tf.convert_to_tensor(offsets)
    target_amplitude = tf.convert_to_tensor(target_amplitude)
    if patches.shape.rank != 4 or patches.shape[-1] is None or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must have shape (B, C, N, N), got {patches.shape}")
    th._check_same_leading(patches, offsets, "patches", "offsets", 2)
    C, N = patches.shape[1], patches.shape[-1]
    if C is None:
        raise ValueError(f"the number of patches per group must be known statically, got "
                         f"{patches.shape}")
    if target_amplitude.shape.rank != 4 or tuple(target_amplitude.shape[1:]) != (C, N, N):
        raise ValueError(f"target_amplitude must have the patches' shape (B, {C}, {N}, {N}), "
                         f"got {target_amplitude.shape}")
    if tuple(probe.shape) != (N, N):
        raise ValueError(f"probe must have shape ({N}, {N}), got {tuple(probe.shape)}")
    pad = N // 2 if pad is None else int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if threshold is None:
        threshold = (_ref.OVERLAP_THRESHOLD if interpolation == "bilinear"
                     else _ref.FOURIER_OVERLAP_THRESHOLD)
    L = N + 2 * pad
    double = interpolation == "bilinear" or patches.dtype in (tf.float64, tf.complex128)
    real = tf.float64 if double else tf.float32
    cplx = tf.complex128 if double else tf.complex64
    b = tf.shape(patches)[0]
    flat_off = tf.reshape(tf.cast(offsets, tf.float64), [-1, 2])
    ay, ax, by, bx = (tf.cast(m, cplx) for m in
                      th.canvas_matrices(flat_off, N, pad, interpolation, cplx))

    def place(arr):
        """(B, C, N, N) (or broadcastable) -> (B, L, L), summed over the members."""
        arr = tf.reshape(tf.broadcast_to(tf.cast(arr, cplx), tf.stack([b, C, N, N])), [-1, N, N])
        placed = _matmul_rows_cols(arr, ay, ax)
        return tf.reduce_sum(tf.reshape(placed, tf.stack([b, C, L, L])), axis=1)

    def back(canvas):
        rep = tf.reshape(tf.repeat(canvas[:, None], C, axis=1), [-1, L, L])
        return tf.reshape(_matmul_rows_cols(rep, by, bx), tf.stack([b, C, N, N]))

    fp = tf.ones((N, N), real) if footprint is None else tf.cast(footprint, real)
    count = tf.math.real(place(fp[None, None]))
    covered = count > float(threshold)
    safe_count = tf.where(covered, count, tf.ones_like(count))
    canvas = tf.where(covered, place(patches) / tf.cast(safe_count, cplx), tf.zeros_like(count, cplx))
    P = tf.cast(probe, cplx)
    intensity = tf.math.real(P) ** 2 + tf.math.imag(P) ** 2
    weight = tf.nn.relu(tf.math.real(place(intensity[None, None])))
    peak = tf.reduce_max(weight, axis=(-2, -1), keepdims=True)
    lit = (weight >= float(lit_fraction) * peak) & (weight > 0)
    safe = tf.cast(tf.where(lit, weight, tf.ones_like(weight)), cplx)
    amp = tf.cast(target_amplitude, real)
    for _ in range(steps):
        F = th.far_field(th.illuminate(back(canvas), P))
        modulus = tf.sqrt(tf.math.real(F) ** 2 + tf.math.imag(F) ** 2 + MODULUS_FLOOR ** 2)
        ratio = amp / modulus
        psi = inverse_far_field(tf.complex(ratio, tf.zeros_like(ratio)) * F)
        canvas = tf.where(lit, place(tf.math.conj(P) * psi) / safe, canvas)
    return tf.cast(back(canvas), patches.dtype if patches.dtype.is_complex else cplx)
