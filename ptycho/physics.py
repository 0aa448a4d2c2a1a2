"""NumPy reference physics for ptychography.

Every operation the network backends (TensorFlow, PyTorch) implement is defined here once, in
plain NumPy, and the backends are tested against these functions. The definitions below are the
specification; read them as such.

Conventions shared by every function in this module
---------------------------------------------------
* Arrays are row-major ``(row, col)``; ``y`` is the row, ``x`` the column. Offsets are
  ``(dy, dx)`` and positions ``(y, x)`` pairs, in object pixels, row first.
* Patch centre: pixel ``N // 2`` along each axis (the pixel ``fftshift`` moves the zero frequency
  to). A patch of side ``N`` centred on the integer position ``(y, x)`` covers object rows
  ``y - N//2 ... y - N//2 + N - 1`` and the matching columns.
* ``translate(img, (dy, dx))`` moves content by ``+dy`` rows and ``+dx`` columns:
  ``out[y, x] = in(y - dy, x - dx)``.
* Precision: all arithmetic is done in float64 / complex128. Results are returned in the
  precision of the input: float32 / complex64 inputs give float32 / complex64 results, float64 /
  complex128 inputs give float64 / complex128 results; integer inputs are treated as float64.
  Statistics (``mean_photons``, ``intensity_scale``, ...) are Python floats, and the Poisson
  likelihoods are float64 arrays.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

__all__ = [
    "INTERPOLATIONS",
    "OVERLAP_THRESHOLD",
    "FOURIER_OVERLAP_THRESHOLD",
    "shift_matrix_indices",
    "translate",
    "extract_patches",
    "reassemble_patches",
    "normalize_overlap",
    "group_reassemble",
    "illuminate",
    "far_field",
    "diffraction_amplitude",
    "poisson_sample",
    "poisson_nll",
    "poisson_nll_full",
    "mean_photons",
    "intensity_scale",
    "normalization_factor",
    "normalize_amplitudes",
    "window_margin",
    "window_taper",
    "edge_taper",
]

INTERPOLATIONS = ("bilinear", "fourier")
"""Accepted values of every ``interpolation`` argument."""

OVERLAP_THRESHOLD = 1e-3
"""Overlap weights at or below this value are treated as uncovered (result 0)."""

FOURIER_OVERLAP_THRESHOLD = 0.5
"""Coverage threshold of ``group_reassemble`` with Fourier interpolation. A Fourier-shifted
0/1 footprint rings (about ±10 % of the step) beyond its edge; dividing by those ringing tails
would amplify the patches there many-fold, so only pixels covered by at least half a footprint
count as covered."""

# Number of array elements (complex128) a chunk of work may allocate at once; bounds memory
# for large batches without changing any result.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# validation and dtype helpers
# --------------------------------------------------------------------------------------------
def _check_interpolation(interpolation: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
        )
    return interpolation


def _out_dtype(arr: np.ndarray) -> np.dtype:
    """Result dtype for an input array: its own float/complex precision, float64 for integers."""
    if np.iscomplexobj(arr):
        return np.dtype(np.complex64) if arr.dtype == np.complex64 else np.dtype(np.complex128)
    if arr.dtype == np.float32:
        return np.dtype(np.float32)
    if arr.dtype.kind in "biuf":
        return np.dtype(np.float64)
    raise TypeError(f"expected a real or complex numeric array, got dtype {arr.dtype}")


def _work(arr: np.ndarray) -> np.ndarray:
    """Array in float64 (real input) or complex128 (complex input)."""
    return arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64, copy=False)


def _pairs(values, count: int, name: str, what: str) -> np.ndarray:
    """Validate a (count, 2) array of finite floats and return it as float64."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n_{what}, 2), got {arr.shape}")
    if arr.shape[0] != count:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but there are {count} {what}; "
            "one (dy, dx) / (y, x) pair per item is required"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def window_margin(N: int, interpolation: str) -> int:
    """Margin (pixels per side) of the window used for sub-pixel patch extraction/placement.

    ``extract_patches`` cuts a window of side ``Nw = N + 2*margin`` around each patch,
    multiplies it by ``window_taper(N, interpolation)`` (outer product), translates it by the
    fractional part of the position and crops the central ``N``; ``reassemble_patches`` applies
    the transpose. Bilinear needs a margin of 1 pixel; Fourier uses ``max(2, N // 4)`` so the
    interpolation sees real neighbouring content rather than an abrupt cut near the patch edge.
    """
    _check_interpolation(interpolation)
    return 1 if interpolation == "bilinear" else max(2, N // 4)


def edge_taper(length: int, margin: int) -> np.ndarray:
    """1-D raised-cosine edge taper, float64 of shape ``(length,)``.

    With ``r = margin - margin // 4`` and ``d = min(k, length - 1 - k)`` the distance of sample
    ``k`` from the nearer end, the taper is ``0.5 * (1 - cos(pi * (d + 1) / (r + 1)))`` for
    ``d < r`` and 1 elsewhere: it rises smoothly from near 0 at the ends to 1, leaving the
    ``margin // 4`` pixels next to the un-tapered centre at full weight. ``margin = 0`` gives
    ones. Tapering before a Fourier shift suppresses the ringing a hard cut would cause.
    """
    if length < 0 or margin < 0:
        raise ValueError(f"length and margin must be >= 0, got {length}, {margin}")
    r = margin - margin // 4
    k = np.arange(length)
    d = np.minimum(k, length - 1 - k).astype(np.float64)
    return np.where(d < r, 0.5 * (1.0 - np.cos(np.pi * (d + 1.0) / (r + 1.0))), 1.0)


def window_taper(N: int, interpolation: str) -> np.ndarray:
    """1-D taper (float64, length ``N + 2*window_margin(N, interpolation)``) applied along both
    axes of a sub-pixel extraction window: ones for bilinear (whose taps never reach the tapered
    pixels), ``edge_taper(Nw, margin)`` for Fourier. It is 1 on the central ``N`` pixels."""
    m = window_margin(N, interpolation)
    if interpolation == "bilinear":
        return np.ones(N + 2 * m, dtype=np.float64)
    return edge_taper(N + 2 * m, m)


# --------------------------------------------------------------------------------------------
# translation
# --------------------------------------------------------------------------------------------
def _shift_rows_bilinear(img: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Bilinear shift along axis 1 of a (B, L, K) float64/complex128 array by ``d`` (B,).

    ``out[b, k] = (1 - w) * in[b, k + a] + w * in[b, k + a + 1]`` with ``s = -d[b]``,
    ``a = floor(s)``, ``w = s - a``; taps outside ``[0, L)`` contribute 0. Whole rows are
    gathered at once (one fancy-index per tap).
    """
    B, L = img.shape[0], img.shape[1]
    s = -d
    a = np.floor(s)
    w = s - a
    a = a.astype(np.int64)
    k = np.arange(L, dtype=np.int64)
    b = np.arange(B)[:, None]
    out = None
    for tap, weight in ((0, 1.0 - w), (1, w)):
        idx = k[None, :] + a[:, None] + tap  # (B, L)
        coef = ((idx >= 0) & (idx < L)) * weight[:, None]  # (B, L) float64
        term = img[b, np.clip(idx, 0, L - 1)] * coef[:, :, None]
        out = term if out is None else out + term
    return out


def _translate_bilinear(img: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Separable bilinear translation of (B, H, W) images: rows by ``dy``, then columns by ``dx``
    (the product of the two 1-D tap weights is the 2-D bilinear weight; zero fill per axis)."""
    rows = _shift_rows_bilinear(img, dy)
    cols = _shift_rows_bilinear(np.ascontiguousarray(rows.transpose(0, 2, 1)), dx)
    return cols.transpose(0, 2, 1)


def _translate_fourier(img: np.ndarray, dy: np.ndarray, dx: np.ndarray, real: bool) -> np.ndarray:
    """Fourier shift of (B, H, W) complex128/float64 images on a centred (2H, 2W) zero pad."""
    B, H, W = img.shape
    H2, W2 = 2 * H, 2 * W
    top, left = H // 2, W // 2
    ky = np.fft.fftfreq(H2)
    kx = np.fft.fftfreq(W2)
    out = np.empty(img.shape, dtype=np.float64 if real else np.complex128)
    chunk = max(1, _CHUNK_ELEMENTS // (H2 * W2))
    for s in range(0, B, chunk):
        e = min(B, s + chunk)
        pad = np.zeros((e - s, H2, W2), dtype=np.complex128)
        pad[:, top:top + H, left:left + W] = img[s:e]
        spec = np.fft.fft2(pad, axes=(-2, -1))
        ramp_y = np.exp(-2j * np.pi * ky[None, :] * dy[s:e, None])
        ramp_x = np.exp(-2j * np.pi * kx[None, :] * dx[s:e, None])
        spec *= ramp_y[:, :, None]
        spec *= ramp_x[:, None, :]
        shifted = np.fft.ifft2(spec, axes=(-2, -1))[:, top:top + H, left:left + W]
        out[s:e] = shifted.real if real else shifted
    return out


def translate(images, offsets, interpolation: str = "bilinear") -> np.ndarray:
    """Translate each image of a batch by its own sub-pixel offset.

    Parameters
    ----------
    images : array (B, H, W), real or complex
        Batch of images. ``B`` may be 0 (an empty batch is returned).
    offsets : array (B, 2), float
        ``(dy, dx)`` per image, in pixels. Exactly one offset per image: a different count
        raises ``ValueError`` (offsets are never broadcast or reused).
    interpolation : "bilinear" | "fourier"

    Returns
    -------
    array (B, H, W), same dtype as ``images`` (integers -> float64).
        Content moved by ``+dy`` rows and ``+dx`` columns: ``out[b, y, x] = in_b(y - dy, x - dx)``.

    Definitions
    -----------
    bilinear
        With ``sy = y - dy``, ``y0 = floor(sy)``, ``wy = sy - y0`` (same for ``x``)::

            out[y, x] = (1-wy)(1-wx) in[y0, x0] + (1-wy) wx in[y0, x0+1]
                      + wy (1-wx) in[y0+1, x0] + wy wx in[y0+1, x0+1]

        where any tap outside the image contributes 0 (zero fill). Integer offsets are exact
        shifts with zero fill.
    fourier
        Each image is zero-padded to ``(2H, 2W)`` with its top-left corner at
        ``(H//2, W//2)``; its 2-D DFT is multiplied by ``exp(-2πi (ky*dy + kx*dx))`` with
        ``ky = np.fft.fftfreq(2H)``, ``kx = np.fft.fftfreq(2W)`` (cycles per pixel; the Nyquist
        bin is at -0.5); the inverse DFT is cropped back to the original window. For real
        ``images`` the real part is returned. Integer offsets with ``|d| < H`` (rows) and
        ``|d| < W`` (cols) equal zero-filled shifts up to rounding; larger ones wrap around
        the padded canvas.

    Images whose offset is exactly ``(0, 0)`` are returned unchanged in both modes.
    """
    _check_interpolation(interpolation)
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (B, H, W), got {images.shape}")
    out_dtype = _out_dtype(images)
    B = images.shape[0]
    offs = _pairs(offsets, B, "offsets", "images")
    if B == 0:
        return np.zeros(images.shape, dtype=out_dtype)
    work = _work(images)
    out = work.copy()
    moving = np.flatnonzero(np.any(offs != 0.0, axis=1))
    if moving.size:
        sub = work[moving]
        dy, dx = offs[moving, 0], offs[moving, 1]
        if interpolation == "bilinear":
            shifted = _translate_bilinear(sub, dy, dx)
        else:
            shifted = _translate_fourier(sub, dy, dx, real=not np.iscomplexobj(work))
        out[moving] = shifted
    return out.astype(out_dtype, copy=False)


# --------------------------------------------------------------------------------------------
# patch extraction and placement
# --------------------------------------------------------------------------------------------
def _split_positions(pos: np.ndarray):
    """Integer part (floor) and fractional part in [0, 1) of (M, 2) positions."""
    ipos = np.floor(pos)
    return ipos.astype(np.int64), pos - ipos


def _check_N(N) -> int:
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"patch side N must be a positive integer, got {N!r}")
    return int(N)


def extract_patches(obj, positions, N: int, interpolation: str = "bilinear") -> np.ndarray:
    """Cut N×N patches centred on (possibly fractional) positions out of an object.

    Parameters
    ----------
    obj : array (H, W), real or complex
    positions : array (M, 2), float, ``(y, x)`` patch centres in object pixels. M may be 0.
    N : int, patch side.
    interpolation : "bilinear" | "fourier"

    Returns
    -------
    array (M, N, N), dtype of ``obj`` (integers -> float64)::

        out[m, i, j] = obj(y_m - N//2 + i, x_m - N//2 + j)

    Pixels outside the object are 0. Positions are split into ``floor(p)`` and a fractional
    part ``f = p - floor(p)`` in [0, 1). For each patch:

    1. a window of side ``Nw = N + 2*margin`` (``margin = window_margin(N, interpolation)``)
       is sliced from the zero-extended object, its pixel ``(margin, margin)`` at object pixel
       ``floor(p) - N//2``;
    2. if ``f != (0, 0)``: the window is multiplied by ``t[:, None] * t[None, :]`` with
       ``t = window_taper(N, interpolation)`` and moved by ``translate(window, -f,
       interpolation)``;
    3. the central N×N (offset ``margin``) is returned.

    Integer positions therefore give exact slices. For bilinear (margin 1, no taper) this is
    exactly bilinear sampling of the zero-extended object. For Fourier the interpolation sees
    ``margin`` pixels of context on each side, smoothly tapered so the cut does not ring.
    """
    _check_interpolation(interpolation)
    N = _check_N(N)
    obj = np.asarray(obj)
    if obj.ndim != 2:
        raise ValueError(f"obj must have shape (H, W), got {obj.shape}")
    pos = np.asarray(positions, dtype=np.float64)
    pos = _pairs(pos, pos.shape[0] if pos.ndim == 2 else -1, "positions", "positions")
    out_dtype = _out_dtype(obj)
    M = pos.shape[0]
    out = np.zeros((M, N, N), dtype=out_dtype)
    if M == 0:
        return out
    work = _work(obj)
    H, W = work.shape
    m = window_margin(N, interpolation)
    Nw = N + 2 * m
    t = window_taper(N, interpolation)
    taper = t[:, None] * t[None, :]
    ipos, frac = _split_positions(pos)
    k = np.arange(Nw, dtype=np.int64)
    chunk = max(1, _CHUNK_ELEMENTS // (4 * Nw * Nw))
    for s in range(0, M, chunk):
        e = min(M, s + chunk)
        rows = ipos[s:e, 0, None] - N // 2 - m + k[None, :]  # (c, Nw)
        cols = ipos[s:e, 1, None] - N // 2 - m + k[None, :]
        vr = (rows >= 0) & (rows < H)
        vc = (cols >= 0) & (cols < W)
        win = work[np.clip(rows, 0, H - 1)[:, :, None], np.clip(cols, 0, W - 1)[:, None, :]]
        win = win * (vr[:, :, None] & vc[:, None, :])
        f = frac[s:e]
        moving = np.flatnonzero(np.any(f != 0.0, axis=1))
        if moving.size:
            win[moving] = translate(win[moving] * taper, -f[moving], interpolation)
        out[s:e] = win[:, m:m + N, m:m + N]
    return out


def _check_canvas_shape(canvas_shape) -> tuple[int, int]:
    try:
        H, W = (int(v) for v in canvas_shape)
    except (TypeError, ValueError):
        raise ValueError(f"canvas_shape must be a pair (H, W) of ints, got {canvas_shape!r}")
    if H < 1 or W < 1:
        raise ValueError(f"canvas_shape must be positive, got {canvas_shape!r}")
    return H, W


def _check_footprint(footprint, N: int) -> np.ndarray:
    if footprint is None:
        return np.ones((N, N), dtype=np.float64)
    fp = np.asarray(footprint)
    if fp.shape != (N, N) or np.iscomplexobj(fp):
        raise ValueError(f"footprint must be a real ({N}, {N}) array, got {fp.dtype} {fp.shape}")
    if not np.all(np.isfinite(fp)):
        raise ValueError("footprint contains NaN or Inf")
    return fp.astype(np.float64)


def _scatter_windows(windows: np.ndarray, top: np.ndarray, left: np.ndarray,
                     canvas_shape: tuple[int, int]) -> np.ndarray:
    """Sum (P, Nw, Nw) windows into a new (H, W) float64/complex128 canvas.

    Window p's pixel (0, 0) lands on canvas pixel ``(top[p], left[p])``; pixels falling
    outside the canvas are dropped.
    """
    H, W = canvas_shape
    Nw = windows.shape[-1]
    k = np.arange(Nw, dtype=np.int64)
    rows = top[:, None] + k[None, :]
    cols = left[:, None] + k[None, :]
    valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
    lin = (rows[:, :, None] * W + cols[:, None, :])[valid]
    vals = windows[valid]
    total = np.bincount(lin, weights=vals.real, minlength=H * W)
    if np.iscomplexobj(windows):
        total = total + 1j * np.bincount(lin, weights=vals.imag, minlength=H * W)
    return total.reshape(H, W)


def reassemble_patches(patches, positions, canvas_shape, interpolation: str = "bilinear",
                       footprint=None):
    """Place patches on a canvas at their centres and sum them: the adjoint of extraction.

    Parameters
    ----------
    patches : array (M, N, N), real or complex
    positions : array (M, 2), ``(y, x)`` patch centres in canvas pixels (same meaning as in
        ``extract_patches``).
    canvas_shape : (H, W)
    interpolation : "bilinear" | "fourier"
    footprint : array (N, N) real, optional (default ones) -- the weight each patch pixel
        contributes to the overlap count.

    Returns
    -------
    canvas : (H, W), dtype of ``patches`` -- ``sum_m A_m^T patches[m]``
    weight : (H, W), float32 (float64 if ``patches`` is double precision) --
        ``sum_m A_m^T footprint``

    ``A_m`` is the linear map ``extract_patches(., positions[m:m+1], N, interpolation)``, and
    this function applies its exact transpose: each patch is embedded in a zero window of side
    ``N + 2*margin``; windows with fractional part ``f != 0`` are moved by
    ``translate(window, +f)`` (the transpose of ``translate(., -f)`` in both
    interpolations) and multiplied by the same window taper; windows are summed into the
    canvas with pixel ``(margin, margin)`` at ``floor(p) - N//2``; pixels outside the canvas
    are dropped. On integer positions a patch's
    pixel ``(N//2, N//2)`` lands exactly on its position. Divide with ``normalize_overlap``;
    with Fourier interpolation at fractional positions the weight rings slightly beyond the
    patch edges, so pass ``threshold=FOURIER_OVERLAP_THRESHOLD`` there to avoid dividing by
    ringing tails.
    """
    _check_interpolation(interpolation)
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (M, N, N), got {patches.shape}")
    M, N = patches.shape[0], patches.shape[1]
    pos = _pairs(positions, M, "positions", "patches")
    H, W = _check_canvas_shape(canvas_shape)
    fp = _check_footprint(footprint, N)
    out_dtype = _out_dtype(patches)
    w_dtype = np.float32 if out_dtype in (np.float32, np.complex64) else np.float64
    work = _work(patches)
    canvas = np.zeros((H, W), dtype=work.dtype)
    weight = np.zeros((H, W), dtype=np.float64)
    m = window_margin(N, interpolation)
    Nw = N + 2 * m
    t = window_taper(N, interpolation)
    taper = t[:, None] * t[None, :]
    ipos, frac = _split_positions(pos)
    chunk = max(1, _CHUNK_ELEMENTS // (4 * Nw * Nw))
    for s in range(0, M, chunk):
        e = min(M, s + chunk)
        win = np.zeros((e - s, Nw, Nw), dtype=work.dtype)
        win[:, m:m + N, m:m + N] = work[s:e]
        fwin = np.zeros((e - s, Nw, Nw), dtype=np.float64)
        fwin[:, m:m + N, m:m + N] = fp
        f = frac[s:e]
        moving = np.flatnonzero(np.any(f != 0.0, axis=1))
        if moving.size:
            win[moving] = translate(win[moving], f[moving], interpolation) * taper
            fwin[moving] = translate(fwin[moving], f[moving], interpolation) * taper
        top = ipos[s:e, 0] - N // 2 - m
        left = ipos[s:e, 1] - N // 2 - m
        canvas += _scatter_windows(win, top, left, (H, W))
        weight += _scatter_windows(fwin, top, left, (H, W))
    return canvas.astype(out_dtype), weight.astype(w_dtype)


def normalize_overlap(canvas, weight, threshold: float = OVERLAP_THRESHOLD) -> np.ndarray:
    """Average overlapping contributions: ``canvas / weight`` where ``weight > threshold``, else 0.

    ``canvas`` and ``weight`` must have the same shape; the result has ``canvas``'s dtype.
    """
    canvas = np.asarray(canvas)
    weight = np.asarray(weight)
    if canvas.shape != weight.shape:
        raise ValueError(f"canvas {canvas.shape} and weight {weight.shape} shapes differ")
    if np.iscomplexobj(weight):
        raise ValueError("weight must be real")
    out_dtype = _out_dtype(canvas)
    w = weight.astype(np.float64)
    covered = w > threshold
    out = np.zeros(canvas.shape, dtype=_work(canvas).dtype)
    out[covered] = _work(canvas)[covered] / w[covered]
    return out.astype(out_dtype, copy=False)


def shift_matrix_indices(L: int, N: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel indices of ``group_reassemble``'s Fourier placement as separable shift matrices.

    ``translate`` shifts an (L, L) canvas on a periodic (2L, 2L) grid, which is a convolution
    with one kernel ``k`` of length 2L per axis and offset. Placing patch pixel r (canvas pixel
    ``r + pad`` before the shift) into canvas pixel y weighs it by ``k_d[place[y, r]]``;
    cutting canvas pixel y back out into patch pixel r weighs it by ``k_-d[back[r, y]]``.
    Returns ``place`` (L, N) and ``back`` (N, L), int64 indices ``mod 2L``; both backends build
    their matrices from them.
    """
    place = (np.arange(L)[:, None] - np.arange(N)[None, :] - pad) % (2 * L)
    return place, (-place.T) % (2 * L)


def group_reassemble(patches, offsets, pad=None, interpolation: str = "bilinear",
                     footprint=None, threshold: float | None = None) -> np.ndarray:
    """Overlap constraint inside the model: average each group's patches on its own canvas.

    Parameters
    ----------
    patches : array (B, C, N, N), real or complex -- C patches per group.
    offsets : array (B, C, 2), float -- ``coords_relative`` ``(dy, dx)`` of each member
        relative to its group centre, in pixels.
    pad : int >= 0, default ``N // 2`` -- canvas side is ``L = N + 2*pad``.
    interpolation : "bilinear" | "fourier"
    footprint : array (N, N) real, default ones (the model passes a 0/1 mask).
    threshold : coverage threshold; default ``OVERLAP_THRESHOLD`` (1e-3) for bilinear and
        ``FOURIER_OVERLAP_THRESHOLD`` (0.5) for Fourier.

    Returns
    -------
    array (B, C, N, N), dtype of ``patches``.

    For each group ``b`` independently (groups are never mixed, for any ``B``):
    1. each patch is zero-padded to ``(L, L)`` with its pixel 0 at canvas pixel ``pad`` (so patch
       pixel ``N//2`` lands on canvas pixel ``L//2``, the group centre) and translated by its
       offset with ``translate``; the footprint is padded and translated the same way;
    2. ``avg = sum_c patch_c / sum_c footprint_c`` where the footprint sum (the count) exceeds
       ``threshold``, else 0;
    3. patch ``c`` is read back as ``translate(avg, -offset_c)[pad:pad+N, pad:pad+N]``.
    Content that an offset moves off the ``L × L`` canvas is lost. Integer offsets reproduce
    consistent patches exactly in both modes; bilinear averages are convex combinations of
    patch values (never amplified); Fourier is exact for band-limited content that vanishes
    towards the patch borders, but rings near hard patch edges.
    """
    _check_interpolation(interpolation)
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[2] != patches.shape[3]:
        raise ValueError(f"patches must have shape (B, C, N, N), got {patches.shape}")
    B, C, N = patches.shape[0], patches.shape[1], patches.shape[2]
    offs = np.asarray(offsets, dtype=np.float64)
    if offs.shape != (B, C, 2):
        raise ValueError(
            f"offsets must have shape (B, C, 2) = ({B}, {C}, 2) to match patches "
            f"{patches.shape}, got {offs.shape}"
        )
    if not np.all(np.isfinite(offs)):
        raise ValueError("offsets contains NaN or Inf")
    if pad is None:
        pad = N // 2
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    pad = int(pad)
    if threshold is None:
        threshold = OVERLAP_THRESHOLD if interpolation == "bilinear" else FOURIER_OVERLAP_THRESHOLD
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    fp = _check_footprint(footprint, N)
    out_dtype = _out_dtype(patches)
    work = _work(patches)
    out = np.zeros(work.shape, dtype=work.dtype)
    L = N + 2 * pad
    per_group = C * L * L * (4 if interpolation == "fourier" else 2)
    chunk = max(1, _CHUNK_ELEMENTS // per_group)
    for s in range(0, B, chunk):
        e = min(B, s + chunk)
        g = e - s
        d = offs[s:e].reshape(g * C, 2)
        canv = np.zeros((g * C, L, L), dtype=work.dtype)
        canv[:, pad:pad + N, pad:pad + N] = work[s:e].reshape(g * C, N, N)
        fcanv = np.zeros((g * C, L, L), dtype=np.float64)
        fcanv[:, pad:pad + N, pad:pad + N] = fp
        total = translate(canv, d, interpolation).reshape(g, C, L, L).sum(axis=1)
        count = translate(fcanv, d, interpolation).reshape(g, C, L, L).sum(axis=1)
        covered = count > threshold
        avg = np.zeros_like(total)
        avg[covered] = total[covered] / count[covered]
        back = np.broadcast_to(avg[:, None], (g, C, L, L)).reshape(g * C, L, L)
        back = translate(back, -d, interpolation)
        out[s:e] = back[:, pad:pad + N, pad:pad + N].reshape(g, C, N, N)
    return out.astype(out_dtype, copy=False)


# --------------------------------------------------------------------------------------------
# forward model
# --------------------------------------------------------------------------------------------
def _illuminate(obj_patches, probe) -> tuple[np.ndarray, bool]:
    """complex128 exit wave and whether either input was double precision."""
    obj_patches = np.asarray(obj_patches)
    probe = np.asarray(probe)
    if probe.ndim != 2 or obj_patches.shape[-2:] != probe.shape:
        raise ValueError(
            f"probe shape {probe.shape} does not match the last two axes of obj_patches "
            f"{obj_patches.shape}"
        )
    double = (_out_dtype(obj_patches) in (np.float64, np.complex128)
              or _out_dtype(probe) in (np.float64, np.complex128))
    return probe.astype(np.complex128) * _work(obj_patches), double


def _far_field128(psi: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(psi, axes=(-2, -1), norm="ortho"), axes=(-2, -1))


def illuminate(obj_patches, probe) -> np.ndarray:
    """Exit wave ``psi = probe * obj_patches``, broadcast over leading axes.

    obj_patches (..., N, N) complex or real; probe (N, N) complex. Returns (..., N, N) complex
    (complex64 unless either input is double precision).
    """
    psi, double = _illuminate(obj_patches, probe)
    return psi.astype(np.complex128 if double else np.complex64, copy=False)


def far_field(psi) -> np.ndarray:
    """Unitary far-field propagation: ``fftshift(fft2(psi, norm="ortho"), axes=(-2, -1))``.

    psi (..., N, N) complex. Returns the same shape, complex64 (complex128 for double input).
    Zero frequency at pixel ``(N//2, N//2)``; ``sum |F|^2 == sum |psi|^2`` (Parseval).
    """
    psi = np.asarray(psi)
    if psi.ndim < 2:
        raise ValueError(f"psi must have at least 2 dimensions (..., N, N), got {psi.shape}")
    out_dtype = np.complex64 if _out_dtype(psi) in (np.float32, np.complex64) else np.complex128
    return _far_field128(_work(psi)).astype(out_dtype, copy=False)


def diffraction_amplitude(obj_patches, probe) -> np.ndarray:
    """Diffraction amplitude ``|far_field(probe * obj_patches)|``, (..., N, N) float32
    (float64 if either input is double precision); computed in complex128 throughout.
    Intensity (expected photon counts for a suitably scaled probe) is its square."""
    psi, double = _illuminate(obj_patches, probe)
    return np.abs(_far_field128(psi)).astype(np.float64 if double else np.float32)


# --------------------------------------------------------------------------------------------
# photon statistics
# --------------------------------------------------------------------------------------------
def poisson_sample(intensity, rng) -> np.ndarray:
    """Photon counts ``K ~ Poisson(intensity)`` as a float64 array of whole numbers.

    intensity : array, any shape, expected counts (>= 0, finite).
    rng : ``numpy.random.Generator`` or an int seed (no implicit global randomness).
    """
    lam = np.asarray(intensity, dtype=np.float64)
    if not np.all(np.isfinite(lam)):
        raise ValueError("intensity contains NaN or Inf")
    if np.any(lam < 0):
        raise ValueError(f"intensity must be >= 0, minimum is {lam.min()}")
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng)}")
    return rng.poisson(lam).astype(np.float64)


def poisson_nll(pred_counts, counts, floor: float = 1e-8) -> np.ndarray:
    """Per-pixel Poisson negative log-likelihood without the constant ``log K!``.

    ``nll = lam - K * log(lam)`` with ``lam = max(pred_counts, floor)``, elementwise, float64,
    broadcast shape of the inputs. ``pred_counts`` are expected photon counts, ``counts`` the
    measured counts (>= 0). Differences between models are unaffected by the omitted constant.
    """
    if not (np.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be a positive finite number, got {floor!r}")
    lam = np.maximum(np.asarray(pred_counts, dtype=np.float64), floor)
    K = np.asarray(counts, dtype=np.float64)
    return lam - K * np.log(lam)


def poisson_nll_full(pred_counts, counts, floor: float = 1e-8) -> np.ndarray:
    """Full per-pixel Poisson NLL ``poisson_nll + lgamma(K + 1)`` = ``-log Poisson(K; lam)``.

    float64, elementwise. Comparable across runs and datasets.
    """
    K = np.asarray(counts, dtype=np.float64)
    return poisson_nll(pred_counts, K, floor) + gammaln(K + 1.0)


def _amplitude_stack(amplitudes, name: str = "amplitudes") -> np.ndarray:
    a = np.asarray(amplitudes)
    if np.iscomplexobj(a):
        raise ValueError(f"{name} must be real, got {a.dtype}")
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must have shape (..., N, N), got {a.shape}")
    a = a.astype(np.float64).reshape((-1,) + a.shape[-2:])
    if a.shape[0] == 0:
        raise ValueError(f"{name} holds no patterns (shape {np.shape(amplitudes)})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf")
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0 (diffraction amplitudes), minimum is {a.min()}")
    return a


def mean_photons(amplitudes) -> float:
    """Mean over patterns of ``sum_pixels amplitude**2`` (float64 arithmetic, Python float).

    amplitudes : (M, N, N) real >= 0 (any leading axes are flattened into patterns).
    """
    a = _amplitude_stack(amplitudes)
    return float(np.mean(np.sum(a * a, axis=(-2, -1))))


def intensity_scale(mean_photons: float, N: int) -> float:
    """Intensity scale ``s = sqrt(mean_photons) / (N / 2)``: network amplitudes -> counts via
    ``lam = (s * A)**2``. ``mean_photons`` > 0 finite (photons per pattern)."""
    N = _check_N(N)
    mp = float(mean_photons)
    if not (np.isfinite(mp) and mp > 0):
        raise ValueError(f"mean_photons must be a positive finite number, got {mean_photons!r}")
    return float(np.sqrt(mp) / (N / 2.0))


def normalization_factor(amplitudes) -> float:
    """Input normalisation factor ``sqrt(mean_photons(amplitudes)) / (N / 2)``.

    Dividing amplitudes by it makes the mean of ``sum_pixels X**2`` over patterns ``(N/2)**2``.
    Raises ``ValueError`` if the amplitudes are all zero.
    """
    a = _amplitude_stack(amplitudes)
    mp = float(np.mean(np.sum(a * a, axis=(-2, -1))))
    if mp <= 0:
        raise ValueError("amplitudes are all zero; the normalisation factor is undefined")
    return float(np.sqrt(mp) / (a.shape[-1] / 2.0))


def normalize_amplitudes(amplitudes, factor: float) -> np.ndarray:
    """``amplitudes / factor``, keeping the dtype of ``amplitudes`` (integers -> float64).

    ``factor`` must be a positive finite number (from ``normalization_factor``).
    """
    f = float(factor)
    if not (np.isfinite(f) and f > 0):
        raise ValueError(f"normalisation factor must be a positive finite number, got {factor!r}")
    a = np.asarray(amplitudes)
    out_dtype = _out_dtype(a)
    return (a.astype(np.float64) / f).astype(out_dtype, copy=False)
