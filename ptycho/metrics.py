"""Image-quality metrics and alignment for comparing a reconstruction with the ground truth.

A ptychographic reconstruction is defined only up to ambiguities that carry no information about
its quality: a global phase offset, (for a refined probe) an amplitude scale and a linear phase
ramp, and a small global translation. :func:`evaluate_reconstruction` removes these (when
``align=True``) and then compares amplitude and phase separately on the scanned region.

Conventions: images are 2-D arrays ``(row, col)``; phases in radians; spatial frequencies in
cycles per pixel (0.5 = Nyquist). Shifts are ``(dy, dx)`` pixels and move content by +dy rows and
+dx columns (the library's translation convention).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "mae",
    "mse",
    "psnr",
    "ssim",
    "frc",
    "frc_threshold",
    "remove_global_phase",
    "remove_phase_ramp",
    "amplitude_scale",
    "register_shift",
    "apply_shift",
    "mask_bounding_box",
    "evaluate_reconstruction",
]


def _pair(a, b, name: str = "images") -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        raise ValueError(f"{name} must have the same shape, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError(f"{name} are empty")
    return x, y


def _diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        return x.astype(np.complex128) - y.astype(np.complex128)
    return x.astype(np.float64) - y.astype(np.float64)


def mae(a, b) -> float:
    """Mean absolute difference ``mean |a - b|`` (complex inputs: modulus of the difference)."""
    x, y = _pair(a, b)
    return float(np.mean(np.abs(_diff(x, y))))


def mse(a, b) -> float:
    """Mean squared difference ``mean |a - b|**2``."""
    x, y = _pair(a, b)
    return float(np.mean(np.abs(_diff(x, y)) ** 2))


def _data_range(truth: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        data_range = float(np.max(truth) - np.min(truth))
        if not data_range > 0:
            data_range = max(float(np.max(np.abs(truth))), 1.0)
    if not (data_range > 0 and math.isfinite(data_range)):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range}")
    return float(data_range)


def psnr(recon, truth, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range**2 / mse)``, real images.

    ``data_range`` defaults to ``max(truth) - min(truth)`` (or ``max(|truth|, 1)`` for a constant
    truth). Identical images give ``inf``.
    """
    x, y = _pair(recon, truth)
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        raise ValueError("psnr takes real images; compare amplitude and phase separately")
    dr = _data_range(y.astype(np.float64), data_range)
    err = mse(x, y)
    if err == 0:
        return math.inf
    return float(10.0 * math.log10(dr * dr / err))


def ssim(recon, truth, data_range: float | None = None) -> float:
    """Structural similarity (``skimage.metrics.structural_similarity``) of two real 2-D images.

    ``data_range`` defaults as in :func:`psnr`. The window is 7 px, shrunk (odd) for images
    smaller than that.
    """
    from skimage.metrics import structural_similarity

    x, y = _pair(recon, truth)
    if np.iscomplexobj(x) or np.iscomplexobj(y) or x.ndim != 2:
        raise ValueError(f"ssim takes real 2-D images, got dtype {x.dtype}, shape {x.shape}")
    if min(x.shape) < 3:
        raise ValueError(f"ssim needs images of at least 3x3 pixels, got {x.shape}")
    win = min(7, min(x.shape) if min(x.shape) % 2 == 1 else min(x.shape) - 1)
    dr = _data_range(y.astype(np.float64), data_range)
    return float(structural_similarity(x.astype(np.float64), y.astype(np.float64),
                                       data_range=dr, win_size=win))


def _hann2d(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def frc(a, b, *, window: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two 2-D images (real or complex).

    ``FRC(r) = Re sum_ring F_a conj(F_b) / sqrt(sum_ring |F_a|^2 * sum_ring |F_b|^2)`` over rings
    of width ``1 / min(H, W)`` cycles/pixel. Real images have their mean removed first; with
    ``window`` both are multiplied by a 2-D Hann window so the image edges do not create
    correlated spectral streaks. Returns ``(freqs, curve)``: ring centre frequencies (cycles per
    pixel, up to Nyquist 0.5) and the correlation per ring (0 for a ring with no power).
    """
    x, y = _pair(a, b)
    if x.ndim != 2 or min(x.shape) < 4:
        raise ValueError(f"frc needs 2-D images of at least 4x4 pixels, got shape {x.shape}")
    x = x.astype(np.complex128)
    y = y.astype(np.complex128)
    if not (np.iscomplexobj(np.asarray(a)) or np.iscomplexobj(np.asarray(b))):
        x = x - x.mean()
        y = y - y.mean()
    if window:
        w = _hann2d(x.shape)
        x, y = x * w, y * w
    fa, fb = np.fft.fft2(x), np.fft.fft2(y)
    h, wd = x.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(wd)[None, :]
    r = np.sqrt(fy ** 2 + fx ** 2)
    width = 1.0 / min(h, wd)
    nbins = int(round(0.5 / width))
    idx = np.floor(r / width + 0.5).astype(int).ravel()
    keep = idx <= nbins
    idx = idx[keep]
    cross = np.bincount(idx, (fa * np.conj(fb)).real.ravel()[keep], minlength=nbins + 1)
    pa = np.bincount(idx, (np.abs(fa) ** 2).ravel()[keep], minlength=nbins + 1)
    pb = np.bincount(idx, (np.abs(fb) ** 2).ravel()[keep], minlength=nbins + 1)
    denom = np.sqrt(pa * pb)
    curve = np.divide(cross, denom, out=np.zeros_like(cross), where=denom > 0)
    freqs = np.arange(nbins + 1) * width
    return freqs[1:], curve[1:]


def frc_threshold(freqs, curve, threshold: float) -> float:
    """First spatial frequency (cycles/pixel) where the FRC curve falls below ``threshold``.

    Linear interpolation between the last ring at or above the threshold and the first ring
    below it. A curve that never drops below returns the highest frequency (resolution limited by
    the sampling); one already below at the first ring returns that ring's frequency.
    """
    f = np.asarray(freqs, dtype=np.float64)
    c = np.asarray(curve, dtype=np.float64)
    if f.shape != c.shape or f.ndim != 1 or f.size == 0:
        raise ValueError(f"freqs and curve must be equal-length 1-D arrays, got {f.shape}, {c.shape}")
    below = np.nonzero(c < threshold)[0]
    if below.size == 0:
        return float(f[-1])
    i = int(below[0])
    if i == 0:
        return float(f[0])
    c0, c1 = c[i - 1], c[i]
    t = (c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0
    return float(f[i - 1] + t * (f[i] - f[i - 1]))


def _weights(shape, mask) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(shape):
        raise ValueError(f"mask must have shape {tuple(shape)}, got {m.shape}")
    if not m.any():
        raise ValueError("mask selects no pixels")
    return m


def remove_global_phase(recon, truth, mask=None) -> tuple[np.ndarray, float]:
    """Multiply ``recon`` by ``exp(i c)`` with the least-squares optimal constant phase ``c``.

    ``c = angle(sum truth * conj(recon))`` over the mask. Returns ``(aligned, c)``.
    """
    r, t = _pair(recon, truth)
    m = _weights(r.shape, mask)
    c = float(np.angle(np.sum(t[m] * np.conj(r[m]))))
    return (r * np.exp(1j * c)).astype(np.result_type(r.dtype, np.complex64)), c


def remove_phase_ramp(recon, truth, mask=None, iterations: int = 3) -> tuple[np.ndarray, tuple]:
    """Remove a global phase offset and a linear phase ramp ``a + b*y + c*x`` from ``recon``.

    Each iteration fits a plane by least squares (weighted by ``|recon| |truth|``) to the wrapped
    phase difference ``angle(truth * conj(recon))`` after removing the current estimate; this
    converges when the residual difference stays well inside ``(-pi, pi)``, i.e. for small ramps.
    Returns ``(aligned, (a, b, c))`` with ``b``, ``c`` in radians per pixel.
    """
    r, t = _pair(recon, truth)
    m = _weights(r.shape, mask)
    yy, xx = np.indices(r.shape, dtype=np.float64)
    coef = np.zeros(3)
    aligned = r.astype(np.complex128)
    for _ in range(max(1, int(iterations))):
        _, c0 = remove_global_phase(aligned, t, m)
        coef[0] += c0
        aligned = r * np.exp(1j * (coef[0] + coef[1] * yy + coef[2] * xx))
        d = np.angle(t * np.conj(aligned))[m]
        w = np.sqrt(np.abs(aligned[m]) * np.abs(t[m]))
        A = np.stack([np.ones(d.size), yy[m], xx[m]], axis=1) * w[:, None]
        sol, *_ = np.linalg.lstsq(A, d * w, rcond=None)
        coef += sol
        aligned = r * np.exp(1j * (coef[0] + coef[1] * yy + coef[2] * xx))
    return aligned.astype(np.result_type(r.dtype, np.complex64)), tuple(float(v) for v in coef)


def amplitude_scale(recon_amp, truth_amp, mask=None) -> tuple[np.ndarray, float]:
    """Least-squares scale ``s = sum(r t) / sum(r^2)`` so that ``s * recon_amp`` best fits the truth.

    Returns ``(s * recon_amp, s)``; an all-zero reconstruction keeps ``s = 1``.
    """
    r, t = _pair(recon_amp, truth_amp)
    m = _weights(r.shape, mask)
    rr = r[m].astype(np.float64)
    den = float(np.sum(rr * rr))
    s = float(np.sum(rr * t[m]) / den) if den > 0 else 1.0
    return r * s, s


def register_shift(recon, truth, upsample_factor: int = 20) -> tuple[float, float]:
    """Sub-pixel shift ``(dy, dx)`` that moves ``recon`` onto ``truth``.

    Uses ``skimage.registration.phase_cross_correlation`` on the complex (or real) images; apply
    it with :func:`apply_shift`. Precision is ``1 / upsample_factor`` pixels.
    """
    from skimage.registration import phase_cross_correlation

    r, t = _pair(recon, truth)
    shift, _, _ = phase_cross_correlation(t, r, upsample_factor=int(upsample_factor),
                                          normalization=None)
    return float(shift[0]), float(shift[1])


def apply_shift(img, shift: tuple[float, float]) -> np.ndarray:
    """Move the content of ``img`` by ``(dy, dx)`` pixels with a Fourier phase ramp (periodic)."""
    from scipy.ndimage import fourier_shift

    a = np.asarray(img)
    out = np.fft.ifft2(fourier_shift(np.fft.fft2(a), shift))
    return out if np.iscomplexobj(a) else out.real


def mask_bounding_box(mask) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` (end exclusive) of the True pixels of a 2-D mask."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    rows = np.nonzero(m.any(axis=1))[0]
    cols = np.nonzero(m.any(axis=0))[0]
    if rows.size == 0:
        raise ValueError("mask selects no pixels")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def evaluate_reconstruction(recon, truth, mask=None, align: bool = True, *,
                            register: bool = False, phase_ramp: bool = False) -> dict:
    """Compare a complex reconstruction with the ground-truth object.

    Both are (H, W) complex arrays on the same pixel grid. ``mask`` (H, W) bool marks the scanned
    region; both images are cropped to its bounding box and the pointwise metrics use only the
    mask's pixels (SSIM and FRC need the full rectangle). Steps, on the crop:

    1. ``register``: sub-pixel shift of the reconstruction onto the truth (Fourier shift).
    2. ``align``: remove the global phase offset (with ``phase_ramp`` also a linear phase ramp),
       then scale the amplitude by the least-squares factor.
    3. Amplitude metrics on ``|recon|`` vs ``|truth|``; phase metrics on the phases, with the
       reconstruction's phase unwrapped towards the truth (difference wrapped to ``(-pi, pi]``).
       PSNR/SSIM use the truth's range as ``data_range``.

    Returns plain floats: ``amp_mae, amp_mse, amp_psnr, amp_ssim, amp_frc50, amp_frc17`` and the
    same with ``phase_``, where ``frc50`` / ``frc17`` are the frequencies (cycles/pixel) at which
    the FRC drops below 0.5 / (1/7); plus ``phase_offset`` (rad), ``amplitude_scale``,
    ``phase_ramp`` ([a, b, c] or None), ``shift`` ([dy, dx] or None), ``crop`` [r0, r1, c0, c1]
    and ``n_pixels``. A PSNR of identical images is ``inf``.
    """
    r, t = _pair(recon, truth, "recon and truth")
    if r.ndim != 2:
        raise ValueError(f"recon and truth must be 2-D (H, W), got shape {r.shape}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(t))):
        raise ValueError("recon or truth contains NaN or Inf")
    m = _weights(r.shape, mask)
    r0, r1, c0, c1 = mask_bounding_box(m)
    r = r[r0:r1, c0:c1].astype(np.complex128)
    t = t[r0:r1, c0:c1].astype(np.complex128)
    m = m[r0:r1, c0:c1]
    if min(r.shape) < 4:
        raise ValueError(f"scanned region {r.shape} is too small to evaluate (need at least 4x4)")
    shift = None
    if register:
        shift = register_shift(r, t)
        r = apply_shift(r, shift)
    offset, scale, ramp = 0.0, 1.0, None
    if align:
        if phase_ramp:
            r, coef = remove_phase_ramp(r, t, m)
            offset, ramp = coef[0], list(coef)
        else:
            r, offset = remove_global_phase(r, t, m)
    amp_r, amp_t = np.abs(r), np.abs(t)
    if align:
        amp_r, scale = amplitude_scale(amp_r, amp_t, m)
    ph_t = np.angle(t)
    ph_r = ph_t + np.angle(np.exp(1j * (np.angle(r) - ph_t)))
    out: dict = {}
    for name, x, y in (("amp", amp_r, amp_t), ("phase", ph_r, ph_t)):
        dr = _data_range(y, None)
        freqs, curve = frc(x, y)
        out[f"{name}_mae"] = mae(x[m], y[m])
        out[f"{name}_mse"] = mse(x[m], y[m])
        out[f"{name}_psnr"] = psnr(x[m], y[m], data_range=dr)
        out[f"{name}_ssim"] = ssim(x, y, data_range=dr)
        out[f"{name}_frc50"] = frc_threshold(freqs, curve, 0.5)
        out[f"{name}_frc17"] = frc_threshold(freqs, curve, 1.0 / 7.0)
    out.update(phase_offset=float(offset), amplitude_scale=float(scale), phase_ramp=ramp,
               shift=None if shift is None else [shift[0], shift[1]],
               crop=[r0, r1, c0, c1], n_pixels=int(m.sum()))
    return out
