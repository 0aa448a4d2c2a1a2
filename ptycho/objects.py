"""Synthetic test objects for simulated ptychography.

Every generator returns a complex64 (H, W) transmission function ``O = A * exp(i * phi)`` with

- amplitude ``A`` in ``amplitude_range`` (default ``[0.5, 1.0]``: 1 = fully transparent,
  0.5 = half the field absorbed), and
- phase ``phi`` in ``phase_range`` radians (default ``[-pi/2, pi/2]``), away from the +-pi wrap
  so that phase errors are not confused by wrapping.

Each real-valued pattern is first drawn in ``[0, 1]``, band-limited with a Gaussian filter of
standard deviation ``smoothing`` pixels (at the default 1 px the response at the Nyquist
frequency is below 1 %, so Fourier sub-pixel shifts of the object are accurate), rescaled to
``[0, 1]`` by its own minimum and maximum and finally mapped linearly onto the amplitude / phase
range. For the random generators the amplitude and the phase are *independent* realisations (a
reconstruction has to recover both separately; crosstalk between them shows up as an error), and
their features absorb: an empty background has the top of the amplitude range (transparent) and
the bottom of the phase range. An image object maps bright pixels to high amplitude and high
phase, from the same picture for both unless a separate phase image is given.

Generators (all seeded through a ``numpy.random.Generator``, bitwise reproducible):

- ``lines``: random straight line segments of random length, angle and weight (anti-aliased).
- ``grf``: Gaussian random field, white noise filtered by a Gaussian of standard deviation
  ``correlation_length`` pixels.
- ``points``: random point scatterers (blobs after smoothing).
- ``image:PATH``: any greyscale or colour image file, resized to cover the object and cropped
  at its centre (aspect ratio preserved).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = [
    "OBJECT_KINDS",
    "DEFAULT_FEATURE_DENSITY",
    "DEFAULT_LINE_LENGTH_RANGE",
    "DEFAULT_AMPLITUDE_RANGE",
    "DEFAULT_PHASE_RANGE",
    "effective_feature_density",
    "lines_pattern",
    "grf_pattern",
    "points_pattern",
    "load_image_pattern",
    "band_limit",
    "to_complex_object",
    "make_object",
]

OBJECT_KINDS = ("lines", "grf", "points", "image:PATH")
# Features per pixel of object area for the generators that draw discrete features.
DEFAULT_FEATURE_DENSITY = {"lines": 1.0 / 150.0, "points": 1.0 / 80.0}
# Segment lengths of ``lines`` in pixels (5 % to 40 % of a 376 px side).
DEFAULT_LINE_LENGTH_RANGE = (18.8, 150.4)
DEFAULT_AMPLITUDE_RANGE = (0.5, 1.0)
DEFAULT_PHASE_RANGE = (-math.pi / 2, math.pi / 2)


def _check_shape(shape) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"object shape must be a pair of integers (H, W), got {shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"object shape must be positive, got {(h, w)}")
    return h, w


def _rescale01(x: np.ndarray) -> np.ndarray:
    """Map ``x`` linearly onto [0, 1]; a constant array becomes 0.5 everywhere."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.full(x.shape, 0.5)
    return (x - lo) / (hi - lo)


def band_limit(pattern: np.ndarray, smoothing: float) -> np.ndarray:
    """Gaussian low-pass (``sigma = smoothing`` pixels, reflecting borders), then rescale to [0, 1].

    ``smoothing = 0`` skips the filter (the pattern is then not band-limited).
    """
    if not (smoothing >= 0 and math.isfinite(smoothing)):
        raise ValueError(f"smoothing must be a finite number >= 0 pixels, got {smoothing}")
    p = np.asarray(pattern, dtype=np.float64)
    if smoothing > 0:
        p = ndimage.gaussian_filter(p, sigma=float(smoothing), mode="reflect")
    return _rescale01(p)


def lines_pattern(shape, rng: np.random.Generator, *,
                  density: float = DEFAULT_FEATURE_DENSITY["lines"],
                  length_range: tuple[float, float] = DEFAULT_LINE_LENGTH_RANGE) -> np.ndarray:
    """Random anti-aliased line segments in [0, 1], float64 (H, W), not yet smoothed.

    ``density``: segments per pixel of object area (default one per 150 px**2).
    ``length_range``: segment length in pixels, drawn uniformly. Density and lengths are both
    per pixel, so the texture (the fraction of the object covered by lines, the number of lines
    crossing a probe) does not grow with the object: a larger scan sees more of the same kind of
    object, not a denser one. Segments are clipped at the borders, which leaves objects not much
    larger than a segment somewhat sparser (a 96 px square about 15 % less covered). Each
    segment has a random centre, angle and weight in [0.3, 1]; overlapping segments keep the
    larger value.
    """
    from skimage.draw import line_aa

    h, w = _check_shape(shape)
    lo, hi = length_range
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"length_range must be finite pixel lengths with 0 < lo <= hi, "
                         f"got {length_range}")
    if not density > 0:
        raise ValueError(f"density must be > 0 segments per pixel, got {density}")
    n = max(1, int(round(density * h * w)))
    img = np.zeros((h, w), dtype=np.float64)
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        length = rng.uniform(lo, hi)
        theta = rng.uniform(0, math.pi)
        weight = rng.uniform(0.3, 1.0)
        dy, dx = 0.5 * length * math.sin(theta), 0.5 * length * math.cos(theta)
        r0, c0 = int(round(cy - dy)), int(round(cx - dx))
        r1, c1 = int(round(cy + dy)), int(round(cx + dx))
        rr, cc, val = line_aa(r0, c0, r1, c1)
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        rr, cc, val = rr[ok], cc[ok], val[ok]
        img[rr, cc] = np.maximum(img[rr, cc], weight * val)
    return img


def grf_pattern(shape, rng: np.random.Generator, *, correlation_length: float = 4.0) -> np.ndarray:
    """Gaussian random field, float64 (H, W), standardised (mean 0, std 1).

    White Gaussian noise filtered with a Gaussian kernel of standard deviation
    ``correlation_length`` pixels (wrap-around borders, so the field is statistically uniform up
    to the edges); the field's autocorrelation is then Gaussian with standard deviation
    ``sqrt(2) * correlation_length``.
    """
    h, w = _check_shape(shape)
    if not (correlation_length > 0 and math.isfinite(correlation_length)):
        raise ValueError(f"correlation_length must be a finite number > 0 pixels, got {correlation_length}")
    noise = rng.standard_normal((h, w))
    field = ndimage.gaussian_filter(noise, sigma=float(correlation_length), mode="wrap")
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def points_pattern(shape, rng: np.random.Generator, *,
                   density: float = DEFAULT_FEATURE_DENSITY["points"]) -> np.ndarray:
    """Random point scatterers: float64 (H, W), zero except ``density * H * W`` pixels with
    weights in [0.3, 1] (the smoothing step turns them into blobs)."""
    h, w = _check_shape(shape)
    if not density > 0:
        raise ValueError(f"density must be > 0 points per pixel, got {density}")
    n = max(1, int(round(density * h * w)))
    img = np.zeros((h, w), dtype=np.float64)
    rr = rng.integers(0, h, size=n)
    cc = rng.integers(0, w, size=n)
    img[rr, cc] = np.maximum(img[rr, cc], rng.uniform(0.3, 1.0, size=n))
    return img


def load_image_pattern(path: str | os.PathLike, shape) -> np.ndarray:
    """Read an image file as greyscale float64 in [0, 1] resized to cover ``shape``, centre-cropped.

    Colour images are converted with ``skimage.color.rgb2gray`` (alpha dropped); integer images
    are scaled by their own range. A missing or unreadable file raises ``ValueError`` naming it.
    """
    from skimage import color, io, transform

    h, w = _check_shape(shape)
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"object image {str(p)!r} does not exist or is not a file")
    try:
        img = np.asarray(io.imread(str(p)))
    except Exception as exc:
        raise ValueError(f"cannot read object image {str(p)!r}: {exc}") from exc
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[-1] == 3:
        img = color.rgb2gray(img)
    elif img.ndim == 3 and img.shape[-1] in (1, 2):
        img = img[..., 0]
    if img.ndim != 2 or min(img.shape) < 2:
        raise ValueError(f"object image {str(p)!r} must be a 2-D greyscale or RGB(A) image, "
                         f"got array shape {img.shape}")
    img = img.astype(np.float64)
    if not np.all(np.isfinite(img)):
        raise ValueError(f"object image {str(p)!r} contains NaN or Inf")
    scale = max(h / img.shape[0], w / img.shape[1])
    big = (max(h, int(math.ceil(img.shape[0] * scale))), max(w, int(math.ceil(img.shape[1] * scale))))
    img = transform.resize(img, big, order=1, mode="reflect", anti_aliasing=scale < 1,
                           preserve_range=True)
    r0 = (big[0] - h) // 2
    c0 = (big[1] - w) // 2
    return _rescale01(img[r0:r0 + h, c0:c0 + w])


def _check_range(name: str, rng_pair) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in rng_pair)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers (lo, hi), got {rng_pair!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name} must be finite with lo <= hi, got {(lo, hi)}")
    return lo, hi


def to_complex_object(amp01: np.ndarray, phase01: np.ndarray, *,
                      amplitude_range=DEFAULT_AMPLITUDE_RANGE,
                      phase_range=DEFAULT_PHASE_RANGE) -> np.ndarray:
    """Combine two [0, 1] patterns into ``A exp(i phi)`` (complex64), mapped linearly onto the ranges."""
    a_lo, a_hi = _check_range("amplitude_range", amplitude_range)
    p_lo, p_hi = _check_range("phase_range", phase_range)
    if a_lo < 0:
        raise ValueError(f"amplitude_range must be >= 0, got {(a_lo, a_hi)}")
    amp = a_lo + (a_hi - a_lo) * np.asarray(amp01, dtype=np.float64)
    phase = p_lo + (p_hi - p_lo) * np.asarray(phase01, dtype=np.float64)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def effective_feature_density(spec: str, feature_density: float | None = None) -> float | None:
    """Features per pixel that ``make_object(spec, ..., feature_density=...)`` draws: the given
    value, else the default of ``spec`` (``None`` for objects without discrete features)."""
    return DEFAULT_FEATURE_DENSITY.get(spec) if feature_density is None else feature_density


def make_object(spec: str, shape, rng: np.random.Generator, *, phase_image: str | None = None,
                smoothing: float = 1.0, correlation_length: float = 4.0,
                feature_density: float | None = None,
                amplitude_range=DEFAULT_AMPLITUDE_RANGE,
                phase_range=DEFAULT_PHASE_RANGE) -> np.ndarray:
    """Build a band-limited complex64 object of ``shape`` (H, W) from a spec string.

    ``spec``: ``"lines"``, ``"grf"``, ``"points"`` or ``"image:PATH"``. ``phase_image`` (only with
    ``image:``) gives the phase from a second image; otherwise the phase follows the same
    picture. ``smoothing`` is the Gaussian band-limit sigma in pixels, ``correlation_length``
    the GRF filter sigma in pixels. ``feature_density`` (``lines`` and ``points`` only) is the
    number of segments / scatterers per pixel of object area, ``None`` for
    ``DEFAULT_FEATURE_DENSITY``; sparser objects leave more flat background. The random
    generators draw the amplitude pattern first and then the phase pattern from ``rng``.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"object spec must be one of {OBJECT_KINDS}, got {spec!r}")
    shape = _check_shape(shape)
    if spec.startswith("image:"):
        path = spec[len("image:"):]
        if not path:
            raise ValueError("object spec 'image:' needs a file path, e.g. image:sample.png")
        amp01 = band_limit(load_image_pattern(path, shape), smoothing)
        phase01 = amp01 if phase_image is None else band_limit(load_image_pattern(phase_image, shape),
                                                               smoothing)
    else:
        if phase_image is not None:
            raise ValueError(f"phase_image is only used with an 'image:PATH' object, not {spec!r}")
        if feature_density is not None and spec not in DEFAULT_FEATURE_DENSITY:
            raise ValueError(f"feature_density applies to the {sorted(DEFAULT_FEATURE_DENSITY)} "
                             f"objects, not {spec!r}")
        density = effective_feature_density(spec, feature_density)
        if spec == "lines":
            draw = lambda: lines_pattern(shape, rng, density=density)  # noqa: E731
        elif spec == "grf":
            draw = lambda: grf_pattern(shape, rng, correlation_length=correlation_length)  # noqa: E731
        elif spec == "points":
            draw = lambda: points_pattern(shape, rng, density=density)  # noqa: E731
        else:
            raise ValueError(f"unknown object spec {spec!r}; expected one of {OBJECT_KINDS}")
        # Features absorb: empty background keeps the top of the amplitude range.
        amp01 = 1.0 - band_limit(draw(), smoothing)
        phase01 = band_limit(draw(), smoothing)
    return to_complex_object(amp01, phase01, amplitude_range=amplitude_range, phase_range=phase_range)
