"""The illuminated region of a scan: where measurements constrain the object.

A pixel is *illuminated* when the probe intensity summed over all scan positions,
``sum_m |P(q - p_m)|**2``, is at least ``fraction`` (default ``ILLUMINATION_FRACTION`` = 10 %)
of its maximum. Outside that region no diffraction pattern depends on the object, so neither
a network nor an iterative solver can be judged there: quality metrics use this mask. Positions
follow the patch convention of ``ptycho.physics`` (``(y, x)`` is the patch centre pixel ``N//2``)
and are given in pixels of the target canvas.
"""

from __future__ import annotations

import numpy as np

from ptycho.physics import reassemble_patches

__all__ = ["ILLUMINATION_FRACTION", "illumination_map", "illumination_mask"]

ILLUMINATION_FRACTION = 0.1
_CHUNK = 512


def illumination_map(probe, positions, shape) -> np.ndarray:
    """(H, W) float64 summed probe intensity ``|probe|**2`` placed at every position (y, x).

    ``probe`` (N, N) complex or real; ``positions`` (M, 2) canvas pixels; ``shape`` (H, W).
    Placement is sub-pixel (bilinear), in chunks so memory does not grow with M.
    """
    intensity = np.abs(np.asarray(probe)) ** 2
    if intensity.ndim != 2 or intensity.shape[0] != intensity.shape[1]:
        raise ValueError(f"probe must be a square (N, N) array, got shape {intensity.shape}")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must have shape (M, 2) (y, x), got {pos.shape}")
    illum = np.zeros(tuple(int(s) for s in shape), dtype=np.float64)
    for s in range(0, len(pos), _CHUNK):
        chunk = pos[s:s + _CHUNK]
        canvas, _ = reassemble_patches(np.broadcast_to(intensity, (len(chunk),) + intensity.shape),
                                       chunk, illum.shape)
        illum += np.real(canvas)
    return illum


def illumination_mask(probe, positions, shape,
                      fraction: float = ILLUMINATION_FRACTION) -> np.ndarray:
    """(H, W) bool: ``illumination_map >= fraction * max``; see the module docstring."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    illum = illumination_map(probe, positions, shape)
    peak = illum.max()
    if not peak > 0:
        raise ValueError("the probe illuminates no pixel of the canvas (all positions outside it "
                         "or a zero probe)")
    return illum >= fraction * peak
