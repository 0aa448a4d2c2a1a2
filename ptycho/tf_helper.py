"""TensorFlow versions of the reference physics (``ptycho.physics``), differentiable and XLA-safe.

Every function here has the name, argument order, shapes and sign conventions of its NumPy
counterpart in ``ptycho.physics`` and is tested against it (float32 within ``1e-5`` of the
reference's largest absolute value; gradients against finite differences in float64). All ops work
in eager mode, inside ``tf.function`` and with ``jit_compile=True`` (XLA), for any batch size
including an empty one (which returns an empty result).

Layout. The physics functions take channels-first arrays like the reference: patches are
``(B, C, N, N)``, offsets ``(B, C, 2)`` as ``(dy, dx)`` in object pixels. The Keras model keeps its
tensors channels-last, ``(B, N, N, C)``, as Keras convolutions expect, and converts with
:func:`to_channels_first` / :func:`to_channels_last` around the physics.

Translation. ``translate(img, (dy, dx))`` moves content by ``+dy`` rows and ``+dx`` columns:
``out[y, x] = in[y - dy, x - dx]``.

* ``"bilinear"`` is computed as two small interpolation matrices per image,
  ``out = Wy @ in @ Wx^T`` with ``W[i, r] = max(0, 1 - |r - (i - d)|)`` (the linear "hat"
  kernel). This is exactly bilinear interpolation with zero fill outside the image, needs no
  gather (so XLA compiles it for any shape), and is differentiable in both the image and the
  offset.
* ``"fourier"`` zero-pads the image to ``(2H, 2W)`` (centred), multiplies its FFT by
  ``exp(-2πi (ky·dy + kx·dx))`` with ``ky, kx`` from ``fftfreq`` and crops back; real input gives
  real output (the real part).

One offset per image: a count mismatch raises ``ValueError`` -- offsets are never reused by index
modulo.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from ptycho import physics as _ref

__all__ = [
    "INTERPOLATIONS",
    "to_channels_first",
    "to_channels_last",
    "translate",
    "extract_patches",
    "reassemble_patches",
    "normalize_overlap",
    "canvas_matrices",
    "group_reassemble",
    "illuminate",
    "far_field",
    "diffraction_amplitude",
    "poisson_nll",
    "poisson_nll_full",
    "mean_photons",
    "intensity_scale",
    "normalization_factor",
    "normalize_amplitudes",
    "normalize_probe",
    "central_mask",
    "pad_to_full",
]

INTERPOLATIONS = ("bilinear", "fourier")
_OVERLAP_THRESHOLD = _ref.OVERLAP_THRESHOLD


# ----------------------------------------------------------------------------------------------
# small utilities

def to_channels_first(x):
    """``(B, N, N, C)`` -> ``(B, C, N, N)`` (the reference layout used by the physics)."""
    return tf.transpose(x, (0, 3, 1, 2))


def to_channels_last(x):
    """``(B, C, N, N)`` -> ``(B, N, N, C)`` (the Keras layout used by the network)."""
    return tf.transpose(x, (0, 2, 3, 1))


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")


def _real_dtype(dtype: tf.DType) -> tf.DType:
    return dtype.real_dtype if dtype.is_complex else dtype


def _scalar(value, dtype):
    """``value`` as a tensor of ``dtype``; a Python/NumPy number is converted directly (a plain
    ``tf.cast`` would first round it to float32, losing precision in float64 computations)."""
    return tf.cast(value, dtype) if tf.is_tensor(value) else tf.constant(value, dtype=dtype)


def _check_same_leading(images, offsets, what_images: str, what_offsets: str, n_lead: int):
    """Demand ``images.shape[:n_lead] == offsets.shape[:n_lead]`` and ``offsets.shape[-1] == 2``.

    Static shapes are compared at trace time (a ``ValueError`` naming both shapes); dimensions
    unknown at trace time are checked at run time with ``tf.debugging.assert_equal``.
    """
    ishape, oshape = images.shape, offsets.shape
    if oshape.rank is not None and ishape.rank is not None:
        if oshape.rank != n_lead + 1 or oshape[-1] not in (None, 2):
            raise ValueError(
                f"{what_offsets} must have shape {tuple(ishape[:n_lead])} + (2,) "
                f"(one (dy, dx) per image), got {tuple(oshape)}")
        for a, b in zip(ishape[:n_lead], oshape[:n_lead]):
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"{what_images} has shape {tuple(ishape)} but {what_offsets} has shape "
                    f"{tuple(oshape)}: one offset per image is required (offsets are never "
                    f"broadcast or reused)")
    if any(d is None for d in list(ishape[:n_lead]) + list(oshape[:n_lead])):
        tf.debugging.assert_equal(
            tf.shape(images)[:n_lead], tf.shape(offsets)[:n_lead],
            message=f"{what_images} and {what_offsets} must have the same leading shape")


def _hat_matrix(out_len: int, in_len: int, src_start, dtype):
    """Linear-interpolation matrices, one per batch item.

    ``src_start``: ``(B,)`` source coordinate sampled by output index 0 (output index ``i``
    samples source coordinate ``src_start + i``). Returns ``(B, out_len, in_len)`` with
    ``W[b, i, r] = max(0, 1 - |r - (src_start[b] + i)|)``; source indices outside
    ``[0, in_len)`` do not exist, which is zero fill.
    """
    cdtype = src_start.dtype
    i = tf.range(out_len, dtype=cdtype)
    r = tf.range(in_len, dtype=cdtype)
    src = src_start[:, None] + i[None, :]                       # (B, out_len)
    w = tf.nn.relu(1.0 - tf.abs(r[None, None, :] - src[:, :, None]))
    return tf.cast(w, dtype)


def _apply_rows_cols(images, wy, wx):
    """``wy @ images @ wx^T`` batched; complex images are handled as real and imaginary parts."""
    if images.dtype.is_complex:
        re = tf.matmul(tf.matmul(wy, tf.math.real(images)), wx, transpose_b=True)
        im = tf.matmul(tf.matmul(wy, tf.math.imag(images)), wx, transpose_b=True)
        return tf.complex(re, im)
    return tf.matmul(tf.matmul(wy, images), wx, transpose_b=True)


def _sample_shared(obj, wy, wx):
    """``wy[m] @ obj @ wx[m]^T`` for one shared ``(H, W)`` image, without copying it M times.

    wy ``(M, n, H)``, wx ``(M, n, W)`` -> ``(M, n, n)``.
    """
    def one(img):
        m, n, h = tf.shape(wy)[0], wy.shape[1], obj.shape[0]
        rows = tf.reshape(tf.matmul(tf.reshape(wy, [-1, h]), img), tf.stack([m, n, obj.shape[1]]))
        return tf.matmul(rows, wx, transpose_b=True)
    if obj.dtype.is_complex:
        return tf.complex(one(tf.math.real(obj)), one(tf.math.imag(obj)))
    return one(obj)


def _place_shared(patches, wy, wx):
    """``Σ_m wy[m]^T @ patches[m] @ wx[m]`` summed onto one canvas (the adjoint of
    :func:`_sample_shared`). patches ``(M, n, n)``, wy ``(M, n, H)``, wx ``(M, n, W)`` -> (H, W)."""
    def one(p):
        h, w = wy.shape[-1], wx.shape[-1]
        a = tf.matmul(wy, p, transpose_a=True)                        # (M, H, n)
        a = tf.reshape(tf.transpose(a, (1, 0, 2)), [h, -1])           # (H, M*n)
        return tf.matmul(a, tf.reshape(wx, [-1, w]))                  # (H, W)
    if patches.dtype.is_complex:
        return tf.complex(one(tf.math.real(patches)), one(tf.math.imag(patches)))
    return one(patches)


def _coord_dtype(offsets, images):
    """Coordinates are computed in float64 when the offsets are float64, else in the image's
    real dtype."""
    return tf.float64 if offsets.dtype == tf.float64 else _real_dtype(images.dtype)


# ----------------------------------------------------------------------------------------------
# translation

def _translate_bilinear(images, offsets):
    """images ``(B, H, W)``, offsets ``(B, 2)``: bilinear shift with zero fill."""
    h, w = images.shape[-2], images.shape[-1]
    rdtype = _real_dtype(images.dtype)
    cdtype = _coord_dtype(offsets, images)
    off = tf.cast(offsets, cdtype)
    wy = _hat_matrix(h, h, -off[:, 0], rdtype)
    wx = _hat_matrix(w, w, -off[:, 1], rdtype)
    return _apply_rows_cols(images, wy, wx)


def _fftfreq(n: int) -> np.ndarray:
    return np.fft.fftfreq(n)


def _fourier_ramp(h2: int, w2: int, offsets, cdtype, complex_dtype):
    """``exp(-2πi (ky·dy + kx·dx))`` on a ``(h2, w2)`` frequency grid, one per offset -> (B, h2, w2)."""
    ky = tf.constant(_fftfreq(h2), dtype=cdtype)
    kx = tf.constant(_fftfreq(w2), dtype=cdtype)
    off = tf.cast(offsets, cdtype)
    angle = -2.0 * math.pi * (ky[None, :, None] * off[:, 0, None, None]
                              + kx[None, None, :] * off[:, 1, None, None])
    real_dtype = complex_dtype.real_dtype
    angle = tf.cast(angle, real_dtype)
    return tf.complex(tf.cos(angle), tf.sin(angle))


def _translate_fourier(images, offsets):
    """images ``(B, H, W)``, offsets ``(B, 2)``: phase ramp on a centred ``(2H, 2W)`` zero pad."""
    h, w = images.shape[-2], images.shape[-1]
    is_complex = images.dtype.is_complex
    complex_dtype = images.dtype if is_complex else (
        tf.complex128 if images.dtype == tf.float64 else tf.complex64)
    x = tf.cast(images, complex_dtype) if not is_complex else images
    top, left = h // 2, w // 2
    x = tf.pad(x, [[0, 0], [top, 2 * h - h - top], [left, 2 * w - w - left]])
    ramp = _fourier_ramp(2 * h, 2 * w, offsets, _coord_dtype(offsets, images), complex_dtype)
    out = tf.signal.ifft2d(tf.signal.fft2d(x) * ramp)[:, top:top + h, left:left + w]
    return out if is_complex else tf.math.real(out)


def translate(images, offsets, interpolation: str = "bilinear"):
    """Shift each image by its own ``(dy, dx)``: ``out[..., y, x] = in[..., y - dy, x - dx]``.

    images: ``(*L, H, W)`` real or complex tensor (``L`` any leading shape, usually ``(B,)``).
    offsets: ``(*L, 2)`` float ``(dy, dx)`` in pixels, one per image; a different leading shape
    raises ``ValueError``. Returns a tensor of the shape and dtype of ``images``.
    """
    _check_interpolation(interpolation)
    images = tf.convert_to_tensor(images)
    offsets = tf.convert_to_tensor(offsets)
    if images.shape.rank is None or images.shape.rank < 2:
        raise ValueError(f"images must have shape (..., H, W), got {images.shape}")
    n_lead = images.shape.rank - 2
    _check_same_leading(images, offsets, "images", "offsets", n_lead)
    h, w = images.shape[-2], images.shape[-1]
    if h is None or w is None:
        raise ValueError(f"image height and width must be known statically, got {images.shape}")
    lead = tf.shape(images)[:n_lead]
    flat = tf.reshape(images, [-1, h, w])
    flat_off = tf.reshape(offsets, [-1, 2])
    fn = _translate_bilinear if interpolation == "bilinear" else _translate_fourier
    out = fn(flat, flat_off)
    return tf.reshape(out, tf.concat([lead, [h, w]], axis=0))


# ----------------------------------------------------------------------------------------------
# patches <-> object

def _split_positions(positions, like):
    """Floor (as float) and fractional part of ``(M, 2)`` positions, in the coordinate dtype."""
    pos = tf.cast(positions, _coord_dtype(positions, like))
    ipos = tf.floor(pos)
    return ipos, pos - ipos


def _taper2d(N: int, interpolation: str, dtype):
    """Outer product of ``physics.window_taper`` (the extraction window's edge taper)."""
    t = _ref.window_taper(N, interpolation)
    return tf.constant(t[:, None] * t[None, :], dtype=dtype)


def extract_patches(obj, positions, N: int, interpolation: str = "bilinear"):
    """Cut ``N×N`` patches centred at sub-pixel positions out of one object.

    obj: ``(H, W)`` real or complex; positions: ``(M, 2)`` ``(y, x)`` patch centres in object
    pixels. ``out[m, i, j] = obj(y_m - N//2 + i, x_m - N//2 + j)``, interpolated; pixels outside
    the object are 0. Returns ``(M, N, N)`` of the object's dtype.

    Bilinear: sampled directly with per-patch interpolation matrices (equal to the reference's
    window-and-translate definition). Fourier: as the reference, a window of side
    ``N + 2·physics.window_margin(N, "fourier")`` is cut at the integer part of the position
    (one-hot selection matrices), multiplied by ``physics.window_taper``, moved by
    ``-fraction`` with the Fourier shift, and its centre kept. (The reference skips the taper
    for integer positions; as the taper is 1 on the kept centre, the result is the same.)
    """
    _check_interpolation(interpolation)
    obj = tf.convert_to_tensor(obj)
    positions = tf.convert_to_tensor(positions)
    if obj.shape.rank != 2 or None in obj.shape:
        raise ValueError(f"obj must have a static shape (H, W), got {obj.shape}")
    if positions.shape.rank != 2 or positions.shape[-1] != 2:
        raise ValueError(f"positions must have shape (M, 2) as (y, x), got {positions.shape}")
    h, w = obj.shape
    rdtype = _real_dtype(obj.dtype)
    if interpolation == "bilinear":
        pos = tf.cast(positions, _coord_dtype(positions, obj))
        wy = _hat_matrix(N, h, pos[:, 0] - N // 2, rdtype)            # (M, N, H)
        wx = _hat_matrix(N, w, pos[:, 1] - N // 2, rdtype)            # (M, N, W)
        return _sample_shared(obj, wy, wx)
    mg = _ref.window_margin(N, interpolation)
    nw = N + 2 * mg
    ipos, frac = _split_positions(positions, obj)
    sy = _hat_matrix(nw, h, ipos[:, 0] - N // 2 - mg, rdtype)         # one-hot (M, Nw, H)
    sx = _hat_matrix(nw, w, ipos[:, 1] - N // 2 - mg, rdtype)
    windows = _sample_shared(obj, sy, sx) * _taper2d(N, interpolation, obj.dtype)
    moved = translate(windows, -frac, "fourier")
    return moved[:, mg:mg + N, mg:mg + N]


def reassemble_patches(patches, positions, canvas_shape, interpolation: str = "bilinear",
                       footprint=None):
    """Place patches onto one canvas (exact adjoint of :func:`extract_patches`), summed.

    patches ``(M, N, N)``, positions ``(M, 2)`` ``(y, x)`` centres, canvas_shape ``(H, W)``.
    Returns ``(canvas (H, W), weight (H, W))`` where ``weight`` is the same placement of
    ``footprint`` (default ones ``(N, N)``). Normalise with :func:`normalize_overlap`.
    """
    _check_interpolation(interpolation)
    patches = tf.convert_to_tensor(patches)
    positions = tf.convert_to_tensor(positions)
    if patches.shape.rank != 3 or patches.shape[-1] is None or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must have shape (M, N, N), got {patches.shape}")
    _check_same_leading(patches, positions, "patches", "positions", 1)
    N = patches.shape[-1]
    h, w = int(canvas_shape[0]), int(canvas_shape[1])
    rdtype = _real_dtype(patches.dtype)
    fp = tf.ones((N, N), rdtype) if footprint is None else tf.cast(footprint, rdtype)
    m = tf.shape(patches)[0]
    fps = tf.broadcast_to(fp[None], tf.stack([m, N, N]))
    if interpolation == "bilinear":
        pos = tf.cast(positions, _coord_dtype(positions, patches))
        wy = _hat_matrix(N, h, pos[:, 0] - N // 2, rdtype)
        wx = _hat_matrix(N, w, pos[:, 1] - N // 2, rdtype)
        return _place_shared(patches, wy, wx), _place_shared(fps, wy, wx)
    mg = _ref.window_margin(N, interpolation)
    ipos, frac = _split_positions(positions, patches)
    padding = [[0, 0], [mg, mg], [mg, mg]]
    win = translate(tf.pad(patches, padding), frac, "fourier") * _taper2d(N, interpolation, patches.dtype)
    fwin = translate(tf.pad(fps, padding), frac, "fourier") * _taper2d(N, interpolation, rdtype)
    nw = N + 2 * mg
    sy = _hat_matrix(nw, h, ipos[:, 0] - N // 2 - mg, rdtype)
    sx = _hat_matrix(nw, w, ipos[:, 1] - N // 2 - mg, rdtype)
    return _place_shared(win, sy, sx), _place_shared(fwin, sy, sx)


def normalize_overlap(canvas, weight, threshold: float = _OVERLAP_THRESHOLD):
    """``canvas / weight`` where ``weight > threshold`` else 0 (gradient-safe)."""
    weight = tf.cast(weight, _real_dtype(canvas.dtype))
    covered = weight > threshold
    safe = tf.where(covered, weight, tf.ones_like(weight))
    out = canvas / tf.cast(safe, canvas.dtype)
    return tf.where(covered, out, tf.zeros_like(out))


def _fourier_shift_matrices(offsets, size: int, index: np.ndarray, dtype):
    """Row and column matrices of ``translate``'s Fourier shift, one pair per offset.

    offsets ``(B, 2)`` float64; the shift on a periodic grid of ``size`` pixels is the
    convolution with ``k = ifft(exp(-2πi f d))``, so ``W[b, i, j] = k_b[index[i, j]]``; the
    kernels are computed in double precision and returned as two ``dtype`` (complex) tensors of
    shape ``(B,) + index.shape``.
    """
    f = tf.constant(_fftfreq(size), dtype=tf.float64)
    angle = -2.0 * math.pi * offsets[:, :, None] * f[None, None, :]  # (B, 2, size)
    kernels = tf.cast(tf.signal.ifft(tf.complex(tf.cos(angle), tf.sin(angle))), dtype)
    idx = tf.constant(index, dtype=tf.int32)
    return tf.gather(kernels[:, 0], idx, axis=1), tf.gather(kernels[:, 1], idx, axis=1)


def canvas_matrices(flat_offsets, N: int, pad: int, interpolation: str, cplx):
    """Row / column matrices that place N×N patches on their group's ``L = N + 2·pad`` canvas
    and cut them back out: ``(ay, ax, by, bx)``, ``ay, ax`` ``(B, L, N)``, ``by, bx`` ``(B, N, L)``.

    ``placed = ay @ patch @ ax^T`` zero-pads the patch to the canvas centre and translates it by
    its ``(dy, dx)`` offset (``flat_offsets`` ``(B, 2)`` float64); ``by @ canvas @ bx^T``
    translates by ``-offset`` and crops the centre. Bilinear: float64 hat matrices (the cut is the
    transpose of the placement); Fourier: ``translate``'s shift on the ``2L`` grid as Toeplitz
    matrices of dtype ``cplx``.
    """
    L = N + 2 * pad
    if interpolation == "bilinear":
        ay = _hat_matrix(L, N, -flat_offsets[:, 0] - pad, tf.float64)       # (B, L, N)
        ax = _hat_matrix(L, N, -flat_offsets[:, 1] - pad, tf.float64)
        return ay, ax, tf.transpose(ay, (0, 2, 1)), tf.transpose(ax, (0, 2, 1))
    place_index, back_index = _ref.shift_matrix_indices(L, N, pad)
    ay, ax = _fourier_shift_matrices(flat_offsets, 2 * L, place_index, cplx)
    by, bx = _fourier_shift_matrices(-flat_offsets, 2 * L, back_index, cplx)
    return ay, ax, by, bx


def group_reassemble(patches, offsets, pad: int | None = None, interpolation: str = "bilinear",
                     footprint=None, threshold: float | None = None):
    """Per-group overlap constraint: average each group's patches on its own canvas, cut back.

    patches: ``(B, C, N, N)`` real or complex; offsets: ``(B, C, 2)`` ``(dy, dx)`` =
    ``coords_relative``; pad: canvas margin (default ``N // 2``, canvas side ``N + 2·pad``);
    footprint: ``(N, N)`` weight placed like the patches (default ones; the model passes its
    central mask when only the central block is predicted); threshold: coverage threshold,
    default ``physics.OVERLAP_THRESHOLD`` (1e-3) for bilinear and
    ``physics.FOURIER_OVERLAP_THRESHOLD`` (0.5) for Fourier (whose shifted footprint rings).

    For every group ``b`` independently: each patch is zero-padded to the canvas centre and
    translated by its offset; the footprint is placed the same way; the canvas is
    ``sum / count`` where ``count > threshold`` else 0; each patch is then cut back out by translating
    the averaged canvas by ``-offset`` and cropping the central ``N×N``. Groups are never mixed,
    whatever the batch size. Bilinear is computed internally in float64 / complex128 (as the
    reference), Fourier in the patches' precision; returns ``(B, C, N, N)`` of the patches' dtype.
    """
    _check_interpolation(interpolation)
    patches = tf.convert_to_tensor(patches)
    offsets = tf.convert_to_tensor(offsets)
    if patches.shape.rank != 4 or patches.shape[-1] is None or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must have shape (B, C, N, N), got {patches.shape}")
    _check_same_leading(patches, offsets, "patches", "offsets", 2)
    c, N = patches.shape[1], patches.shape[-1]
    if c is None:
        raise ValueError(f"the number of patches per group must be known statically, got {patches.shape}")
    pad = N // 2 if pad is None else int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    L = N + 2 * pad
    if threshold is None:
        threshold = (_ref.OVERLAP_THRESHOLD if interpolation == "bilinear"
                     else _ref.FOURIER_OVERLAP_THRESHOLD)
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    fp = tf.ones((N, N), tf.float64) if footprint is None else tf.cast(footprint, tf.float64)
    if fp.shape != (N, N):
        raise ValueError(f"footprint must have shape ({N}, {N}), got {tuple(fp.shape)}")
    # Bilinear is computed in double precision, like the reference: where the summed footprint
    # is small (the soft edge of a shifted footprint, down to the 1e-3 threshold) the division
    # would amplify float32 round-off up to a thousandfold. Fourier's threshold of 0.5 does not,
    # so it runs in the patches' own precision.
    double = interpolation == "bilinear" or patches.dtype in (tf.float64, tf.complex128)
    real = tf.float64 if double else tf.float32
    cplx = tf.complex128 if double else tf.complex64
    wide = cplx if patches.dtype.is_complex else real
    b = tf.shape(patches)[0]
    flat = tf.reshape(tf.cast(patches, wide), [-1, N, N])             # (B*C, N, N)
    flat_off = tf.reshape(tf.cast(offsets, tf.float64), [-1, 2])
    fps = tf.broadcast_to(tf.cast(fp, real)[None], tf.shape(flat))
    # Fourier: translate's (2L, 2L) shift as Toeplitz matrices, the same numbers from two small
    # matrix products per patch instead of two (2L, 2L) FFTs per canvas.
    ay, ax, by, bx = canvas_matrices(flat_off, N, pad, interpolation, cplx)   # (B*C, L, N) ...
    if interpolation == "bilinear":
        placed = _apply_rows_cols(flat, ay, ax)                       # (B*C, L, L)
        placed_fp = _apply_rows_cols(fps, ay, ax)
    else:
        placed = tf.matmul(tf.matmul(ay, tf.cast(flat, cplx)), ax, transpose_b=True)  # (B*C, L, L)
        placed_fp = tf.math.real(tf.matmul(tf.matmul(ay, tf.cast(fps, cplx)), ax,
                                           transpose_b=True))
        if not patches.dtype.is_complex:
            placed = tf.math.real(placed)
    canvas = tf.reduce_sum(tf.reshape(placed, tf.stack([b, c, L, L])), axis=1)      # (B, L, L)
    count = tf.reduce_sum(tf.reshape(placed_fp, tf.stack([b, c, L, L])), axis=1)
    avg = normalize_overlap(canvas, count, threshold)
    avg_rep = tf.reshape(tf.repeat(avg[:, None], c, axis=1), [-1, L, L])         # (B*C, L, L)
    if interpolation == "bilinear":
        out = _apply_rows_cols(avg_rep, by, bx)
    else:
        out = tf.matmul(tf.matmul(by, tf.cast(avg_rep, cplx)), bx, transpose_b=True)
        if not patches.dtype.is_complex:
            out = tf.math.real(out)
    out = tf.cast(out, patches.dtype)
    return tf.reshape(out, tf.stack([b, c, N, N]))


# ----------------------------------------------------------------------------------------------
# diffraction and statistics

def illuminate(obj_patches, probe):
    """Exit wave ``probe * obj_patches`` (probe ``(N, N)`` broadcast over leading axes)."""
    obj_patches = tf.convert_to_tensor(obj_patches)
    probe = tf.cast(tf.convert_to_tensor(probe), obj_patches.dtype)
    return probe * obj_patches


def far_field(psi):
    """Unitary far field: ``fftshift(fft2(psi, norm="ortho"))`` over the last two axes.

    TensorFlow's ``fft2d`` is unnormalised, so the result is scaled by ``1/sqrt(H·W)`` (``1/N``
    for square patches); zero frequency lands at pixel ``(H//2, W//2)``. Complex in, complex out.
    """
    psi = tf.convert_to_tensor(psi)
    if not psi.dtype.is_complex:
        psi = tf.cast(psi, tf.complex128 if psi.dtype == tf.float64 else tf.complex64)
    h, w = psi.shape[-2], psi.shape[-1]
    scale = _scalar(1.0 / math.sqrt(h * w), psi.dtype)
    return tf.signal.fftshift(tf.signal.fft2d(psi) * scale, axes=(-2, -1))


def diffraction_amplitude(obj_patches, probe):
    """``|far_field(illuminate(obj_patches, probe))|`` (real, same leading shape)."""
    return tf.abs(far_field(illuminate(obj_patches, probe)))


def poisson_nll(pred_counts, counts, floor: float = 1e-8):
    """Elementwise Poisson negative log-likelihood without the constant: ``λ - K·log λ``,
    ``λ = max(pred_counts, floor)``."""
    pred_counts = tf.convert_to_tensor(pred_counts)
    counts = tf.cast(counts, pred_counts.dtype)
    lam = tf.maximum(pred_counts, _scalar(floor, pred_counts.dtype))
    return lam - counts * tf.math.log(lam)


def poisson_nll_full(pred_counts, counts, floor: float = 1e-8):
    """Full Poisson NLL ``λ - K·log λ + log K!`` (comparable across runs)."""
    pred_counts = tf.convert_to_tensor(pred_counts)
    counts = tf.cast(counts, pred_counts.dtype)
    return poisson_nll(pred_counts, counts, floor) + tf.math.lgamma(counts + 1.0)


def mean_photons(amplitudes):
    """Mean over patterns of ``Σ_pixels amplitude²`` (float64 scalar). amplitudes ``(M, N, N)``."""
    a = tf.cast(tf.convert_to_tensor(amplitudes), tf.float64)
    return tf.reduce_mean(tf.reduce_sum(a * a, axis=(-2, -1)))


def intensity_scale(mean_photons_value, N: int):
    """``sqrt(mean_photons) / (N / 2)``: maps network amplitudes to photon counts."""
    return tf.sqrt(_scalar(mean_photons_value, tf.float64)) / (N / 2.0)


def normalization_factor(amplitudes):
    """Input normalisation ``sqrt(mean_photons(amplitudes)) / (N / 2)``."""
    amplitudes = tf.convert_to_tensor(amplitudes)
    return intensity_scale(mean_photons(amplitudes), amplitudes.shape[-1])


def normalize_amplitudes(amplitudes, factor):
    """``amplitudes / factor`` (input normalisation)."""
    amplitudes = tf.convert_to_tensor(amplitudes)
    return amplitudes / _scalar(factor, amplitudes.dtype)


def normalize_probe(probe):
    """Scale a complex ``(N, N)`` probe so that ``Σ|P|² = (N/2)²`` (differentiable)."""
    probe = tf.convert_to_tensor(probe)
    N = probe.shape[-1]
    power = tf.reduce_sum(tf.math.real(probe) ** 2 + tf.math.imag(probe) ** 2)
    scale = (N / 2.0) / tf.sqrt(power)
    return probe * tf.cast(scale, probe.dtype)


def central_mask(N: int, dtype=tf.float32):
    """``(N, N)`` mask, 1 on the central ``N/2×N/2`` block (rows/cols ``N/4 … 3N/4-1``), else 0."""
    m = np.zeros((N, N), np.float64)
    m[N // 4:N // 4 + N // 2, N // 4:N // 4 + N // 2] = 1.0
    return tf.constant(m, dtype=dtype)


def pad_to_full(central, N: int):
    """Zero-pad a channels-last ``(B, N/2, N/2, C)`` block to ``(B, N, N, C)`` at the centre."""
    q = N // 4
    return tf.pad(central, [[0, 0], [q, N - N // 2 - q], [q, N - N // 2 - q], [0, 0]])
