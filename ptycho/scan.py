"""Scan patterns for simulated ptychography.

Positions are ``(y, x)`` float64 pairs in object pixels giving the *centre* of each N x N patch
(the contract's convention). Patterns are first built in a local frame whose bounding box starts
at (0, 0), then placed into an object (or a part of it) with :func:`place_scan`, which keeps every
patch, including a safety margin for sub-pixel interpolation, inside the object.

Step size: either given directly in pixels, or from the *linear overlap* ``f`` of neighbouring
probe footprints, ``step = (1 - f) * D`` with ``D`` the probe diameter of
:func:`probe_diameter`. ``f = 0.75`` (step a quarter of the probe diameter) is a typical,
comfortably redundant ptychographic overlap.

Patterns:

- ``raster``: row-major grid of ``ceil(sqrt(n))`` columns, spacing ``step``.
- ``random``: uniform positions in a square of side ``step * sqrt(n)`` (same mean density as
  the raster).
- ``fermat``: Fermat spiral ``r_k = c sqrt(k)``, ``theta_k = k * golden angle``. Each point
  occupies an area ``pi c**2``; ``c = step * sqrt(sqrt(3) / (2 pi))`` gives the area per point of
  a hexagonal lattice with nearest-neighbour distance ``step``.

Optional jitter (all patterns) adds independent uniform offsets in ``[-jitter, +jitter]`` pixels
to each coordinate, breaking the raster's periodicity (which otherwise causes "raster grid
pathology" artefacts in reconstructions).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "SCAN_KINDS",
    "probe_diameter",
    "step_from_overlap",
    "raster_scan",
    "random_scan",
    "fermat_scan",
    "make_scan",
    "scan_extent",
    "required_size",
    "place_scan",
]

SCAN_KINDS = ("raster", "random", "fermat")
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def probe_diameter(probe) -> float:
    """Diameter (pixels) of the disk whose area equals the region where ``|P| >= max|P| / 2``.

    For a disk-like probe this is its diameter at half the maximum amplitude; for any probe it
    is a robust footprint size that ignores weak side lobes and noise. Raises ``ValueError`` for
    a non-2-D, non-finite or all-zero probe.
    """
    p = np.abs(np.asarray(probe))
    if p.ndim != 2:
        raise ValueError(f"probe must be a 2-D array, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probe contains NaN or Inf")
    peak = float(p.max()) if p.size else 0.0
    if not peak > 0:
        raise ValueError("probe is all zero; cannot measure its diameter")
    area = float(np.count_nonzero(p >= 0.5 * peak))
    return 2.0 * math.sqrt(area / math.pi)


def step_from_overlap(diameter: float, overlap: float) -> float:
    """Step (pixels) giving a linear overlap fraction ``overlap`` in [0, 1) of a ``diameter`` probe."""
    if not (0.0 <= overlap < 1.0):
        raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap}")
    if not (diameter > 0 and math.isfinite(diameter)):
        raise ValueError(f"probe diameter must be a finite number > 0 pixels, got {diameter}")
    return (1.0 - overlap) * diameter


def _check_n_step(n: int, step: float) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"number of scan positions must be an integer >= 1, got {n}")
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"scan step must be a finite number > 0 pixels, got {step}")


def raster_scan(n: int, step: float) -> np.ndarray:
    """(n, 2) float64 positions on a row-major grid with ``ceil(sqrt(n))`` columns."""
    _check_n_step(n, step)
    ncols = int(math.ceil(math.sqrt(n)))
    k = np.arange(n)
    return np.stack([(k // ncols) * float(step), (k % ncols) * float(step)], axis=1).astype(np.float64)


def random_scan(n: int, step: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) float64 uniform positions in a square of side ``step * sqrt(n)``."""
    _check_n_step(n, step)
    side = float(step) * math.sqrt(n)
    return rng.uniform(0.0, side, size=(n, 2))


def fermat_scan(n: int, step: float) -> np.ndarray:
    """(n, 2) float64 Fermat-spiral positions with nearest-neighbour spacing about ``step``."""
    _check_n_step(n, step)
    c = float(step) * math.sqrt(math.sqrt(3.0) / (2.0 * math.pi))
    k = np.arange(n, dtype=np.float64)
    r = c * np.sqrt(k)
    theta = k * GOLDEN_ANGLE
    return np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)


def make_scan(kind: str, n: int, step: float, rng: np.random.Generator, *,
              jitter: float = 0.0) -> np.ndarray:
    """Scan pattern ``kind`` (one of :data:`SCAN_KINDS`) in a local frame with minimum (0, 0).

    ``jitter`` (pixels, >= 0) adds uniform noise in ``[-jitter, jitter]`` to each coordinate; it
    draws from ``rng`` only when positive. Returns (n, 2) float64 ``(y, x)``.
    """
    if not (jitter >= 0 and math.isfinite(jitter)):
        raise ValueError(f"jitter must be a finite number >= 0 pixels, got {jitter}")
    if kind == "raster":
        pos = raster_scan(n, step)
    elif kind == "random":
        pos = random_scan(n, step, rng)
    elif kind == "fermat":
        pos = fermat_scan(n, step)
    else:
        raise ValueError(f"unknown scan pattern {kind!r}; expected one of {SCAN_KINDS}")
    if jitter > 0:
        pos = pos + rng.uniform(-jitter, jitter, size=pos.shape)
    return pos - pos.min(axis=0)


def scan_extent(local: np.ndarray) -> tuple[float, float]:
    """Height and width (pixels) of the bounding box of the positions."""
    pos = np.asarray(local, dtype=np.float64)
    ext = pos.max(axis=0) - pos.min(axis=0)
    return float(ext[0]), float(ext[1])


def required_size(extent: float, N: int, margin: int) -> int:
    """Smallest side (pixels) of a region that holds a scan of ``extent`` with N x N patches.

    Centres need ``N/2 + margin`` pixels on each side, plus one pixel for integer rounding of
    the placement.
    """
    return int(math.ceil(extent)) + int(N) + 2 * int(margin) + 1


def place_scan(local: np.ndarray, N: int, region_shape: tuple[int, int],
               region_origin: tuple[int, int] = (0, 0), margin: int = 2) -> np.ndarray:
    """Centre a local scan pattern in a region of the object; returns (M, 2) ``(y, x)`` centres.

    The region is rows ``origin[0] .. origin[0] + shape[0] - 1`` and the same for columns. The
    shift is an integer (so an integer-step raster stays on integer pixels). Every N x N patch,
    widened by ``margin`` pixels, must lie inside the region, otherwise ``ValueError`` reports the
    region size the scan needs.
    """
    pos = np.asarray(local, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise ValueError(f"scan positions must have shape (M, 2) with M >= 1, got {pos.shape}")
    lo = pos.min(axis=0)
    ext = pos.max(axis=0) - lo
    out = np.empty_like(pos)
    half = N / 2.0
    for axis, name in ((0, "height"), (1, "width")):
        size = int(region_shape[axis])
        origin = int(region_origin[axis])
        shift = round(origin + size / 2.0 - ext[axis] / 2.0 - lo[axis])
        out[:, axis] = pos[:, axis] + shift
        first = origin + half + margin
        last = origin + size - half - margin
        if out[:, axis].min() < first - 1e-9 or out[:, axis].max() > last + 1e-9:
            need = required_size(ext[axis], N, margin)
            raise ValueError(
                f"scan does not fit: its {name} needs a region of at least {need} pixels "
                f"(scan extent {ext[axis]:.1f} px + patch N={N} + 2*margin {margin} + 1), "
                f"but the region is {size} pixels")
    return out
