"""Stitching predicted object patches into one object image.

Each (N, N) patch has its pixel ``(N//2, N//2)`` on its scan position ``p = (y, x)``. Only the
central ``crop`` x ``crop`` block of each patch contributes, and overlapping contributions are
averaged with the same footprint in numerator and denominator::

    obj = sum_m P_m (mask * S_m patch_m) / sum_m P_m mask    where the denominator > 1e-3, else 0

* ``S_m`` moves the patch onto the integer pixel grid: ``translate(patch * taper, +f)`` with
  ``f = p - floor(p)`` (identity when ``f == 0``); ``taper`` is ones for bilinear and, for
  Fourier, ``edge_taper(N, (N - crop)//2)`` along both axes (ones when ``crop == N``), which
  keeps the cut at the patch border from ringing into the cropped block;
* ``mask`` is the central crop: ones on rows/cols ``(N - crop)//2 ... (N - crop)//2 + crop - 1``,
  optionally multiplied by a per-pixel weight such as the probe intensity (``probe_weight``);
* ``P_m`` places an (N, N) array with its pixel (0, 0) on canvas pixel ``floor(p) - N//2``
  (``reassemble_patches`` at integer positions, exact; pixels off the canvas are dropped).

So the stitched value at canvas pixel ``q`` is the average, over patches whose crop covers
``q``, of ``patch_m`` interpolated at ``q - p_m + N//2``, and the weight is an integer count
(with a per-pixel weight: the weighted average and the summed weight).
Patches cut out of an object with ``extract_patches`` at integer positions are stitched back to
exactly that object on the scanned region.

``Stitcher`` accumulates batch by batch (memory bounded by the canvas, not by the number of
patches); ``stitch_patches`` is the one-call form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptycho.physics import (
    INTERPOLATIONS,
    OVERLAP_THRESHOLD,
    edge_taper,
    normalize_overlap,
    reassemble_patches,
    translate,
)

__all__ = ["StitchResult", "Stitcher", "stitch_patches", "canvas_for_positions", "crop_mask",
           "probe_weight"]


@dataclass(frozen=True)
class StitchResult:
    """Stitched object.

    obj : (H, W) complex64 -- averaged object, 0 outside the scanned region.
    weight : (H, W) float32 -- summed footprint (overlap count; fractional near bilinear edges).
    scanned_mask : (H, W) bool -- ``weight > 1e-3``, where ``obj`` is defined.
    origin : (y0, x0) ints -- object pixel of canvas pixel (0, 0): canvas pixel ``(r, c)`` is
        object pixel ``(r + y0, c + x0)``. (0, 0) when the canvas shape was given.
    """

    obj: np.ndarray
    weight: np.ndarray
    scanned_mask: np.ndarray
    origin: tuple[int, int]


def _positions(positions, name: str = "positions") -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"{name} must have shape (P, 2) with (y, x) rows, got {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError(f"{name} contains NaN or Inf")
    return pos


def _check_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def crop_mask(N: int, crop: int | None = None) -> np.ndarray:
    """(N, N) float64 mask, 1 on the central ``crop`` x ``crop`` block (rows/cols
    ``(N - crop)//2 ... (N - crop)//2 + crop - 1``), else 0. ``crop`` None means N (all ones)."""
    N = _check_int(N, "N")
    crop = N if crop is None else _check_int(crop, "crop")
    if crop > N:
        raise ValueError(f"crop ({crop}) must not exceed the patch side N ({N})")
    start = (N - crop) // 2
    mask = np.zeros((N, N), dtype=np.float64)
    mask[start:start + crop, start:start + crop] = 1.0
    return mask


def probe_weight(probe) -> np.ndarray:
    """(N, N) float64 stitching weight ``|probe|**2 / max |probe|**2`` (see ``Stitcher``)."""
    intensity = np.abs(np.asarray(probe)).astype(np.float64) ** 2
    if intensity.ndim != 2 or intensity.shape[0] != intensity.shape[1]:
        raise ValueError(f"probe must be a square (N, N) array, got shape {intensity.shape}")
    peak = intensity.max()
    if not (np.isfinite(peak) and peak > 0):
        raise ValueError("probe is zero or not finite; it cannot weight the stitching")
    return intensity / peak


def canvas_for_positions(positions, N: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Smallest canvas holding every N×N patch centred on ``positions`` (object pixels).

    Returns ``((H, W), (y0, x0))`` with ``y0 = floor(min y) - N//2`` and
    ``H = floor(max y) - floor(min y) + N`` (same for x): each patch is placed with its
    pixel (0, 0) at ``floor(p) - N//2`` (see the module docstring).
    """
    pos = _positions(positions)
    N = _check_int(N, "N")
    if pos.shape[0] == 0:
        raise ValueError("positions is empty; the canvas cannot be derived from it")
    lo = np.floor(pos.min(axis=0)).astype(np.int64)
    hi = np.floor(pos.max(axis=0)).astype(np.int64)
    shape = (int(hi[0] - lo[0] + N), int(hi[1] - lo[1] + N))
    origin = (int(lo[0] - N // 2), int(lo[1] - N // 2))
    return shape, origin


class Stitcher:
    """Accumulates patches onto a fixed canvas batch by batch.

    Parameters
    ----------
    canvas_shape : (H, W) of the output object.
    N : patch side.
    crop : side of the central block of each patch that is placed; None -> N.
    interpolation : "bilinear" | "fourier" (sub-pixel placement, see ``reassemble_patches``).
    origin : (y0, x0) object pixel of canvas pixel (0, 0); positions given to ``add`` are in
        object pixels and are shifted by ``-origin``.
    pixel_weight : optional (N, N) real array >= 0 multiplying the crop mask in numerator and
        denominator, e.g. ``probe_weight(probe)``: each patch pixel then counts as much as the
        probe intensity that measured it, so poorly constrained patch edges do not dilute the
        well measured centres of overlapping patches. None means uniform weights.

    Sums are kept in complex128 / float64; memory is two (H, W) arrays plus one batch.
    """

    def __init__(self, canvas_shape, N: int, crop: int | None = None,
                 interpolation: str = "bilinear", origin=(0, 0), pixel_weight=None):
        try:
            H, W = (int(v) for v in canvas_shape)
        except (TypeError, ValueError):
            raise ValueError(f"canvas_shape must be a pair (H, W), got {canvas_shape!r}")
        if H < 1 or W < 1:
            raise ValueError(f"canvas_shape must be positive, got {canvas_shape!r}")
        try:
            y0, x0 = (int(v) for v in origin)
        except (TypeError, ValueError):
            raise ValueError(f"origin must be a pair (y0, x0) of ints, got {origin!r}")
        self.canvas_shape = (H, W)
        self.N = _check_int(N, "N")
        self.crop = self.N if crop is None else _check_int(crop, "crop")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        self.interpolation = interpolation
        self.origin = (y0, x0)
        self._mask = crop_mask(self.N, self.crop)
        if pixel_weight is not None:
            w = np.asarray(pixel_weight)
            if w.shape != (self.N, self.N) or np.iscomplexobj(w) or not np.all(np.isfinite(w)) \
                    or np.any(w < 0):
                raise ValueError(f"pixel_weight must be a finite real ({self.N}, {self.N}) array "
                                 f">= 0, got {w.dtype} {w.shape}")
            self._mask = self._mask * w.astype(np.float64)
            if not np.any(self._mask > 0):
                raise ValueError(f"pixel_weight is zero on the whole central {self.crop}x"
                                 f"{self.crop} crop; nothing would be stitched")
        if interpolation == "fourier":
            t = edge_taper(self.N, (self.N - self.crop) // 2)
            self._taper = t[:, None] * t[None, :]
        else:
            self._taper = np.ones((self.N, self.N), dtype=np.float64)
        self._canvas = np.zeros((H, W), dtype=np.complex128)
        self._weight = np.zeros((H, W), dtype=np.float64)
        self.n_patches = 0

    def add(self, patches, positions) -> None:
        """Add a batch: patches (P, N, N) real or complex, positions (P, 2) (y, x) object pixels."""
        patches = np.asarray(patches)
        if patches.ndim != 3 or patches.shape[1:] != (self.N, self.N):
            raise ValueError(
                f"patches must have shape (P, {self.N}, {self.N}), got {patches.shape}"
            )
        pos = _positions(positions)
        if pos.shape[0] != patches.shape[0]:
            raise ValueError(
                f"{patches.shape[0]} patches but {pos.shape[0]} positions; one (y, x) per patch"
            )
        if not np.all(np.isfinite(patches)):
            raise ValueError("patches contain NaN or Inf")
        if patches.shape[0] == 0:
            return
        local = pos - np.asarray(self.origin, dtype=np.float64)
        ipos = np.floor(local)
        frac = local - ipos
        work = patches.astype(np.complex128)
        moving = np.flatnonzero(np.any(frac != 0.0, axis=1))
        if moving.size:
            work[moving] = translate(work[moving] * self._taper, frac[moving], self.interpolation)
        canvas, weight = reassemble_patches(
            work * self._mask, ipos, self.canvas_shape, footprint=self._mask,
        )
        self._canvas += canvas
        self._weight += weight
        self.n_patches += patches.shape[0]

    def result(self) -> StitchResult:
        """Current average as a ``StitchResult`` (the accumulator stays usable)."""
        obj = normalize_overlap(self._canvas, self._weight, OVERLAP_THRESHOLD)
        return StitchResult(
            obj=obj.astype(np.complex64),
            weight=self._weight.astype(np.float32),
            scanned_mask=self._weight > OVERLAP_THRESHOLD,
            origin=self.origin,
        )


def stitch_patches(patches, positions, canvas_shape=None, crop: int | None = None,
                   interpolation: str = "bilinear", batch_size: int = 1024,
                   pixel_weight=None) -> StitchResult:
    """Stitch patches (P, N, N) at positions (P, 2) ``(y, x)`` into one object.

    ``canvas_shape`` None -> ``canvas_for_positions(positions, N)`` (the bounding box of the
    positions ± N/2, with ``origin`` recorded in the result); otherwise positions are canvas
    pixels and origin is (0, 0). ``crop`` None -> N. ``pixel_weight``: see ``Stitcher``.
    Patches are placed ``batch_size`` at a time.
    """
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (P, N, N), got {patches.shape}")
    pos = _positions(positions)
    if pos.shape[0] != patches.shape[0]:
        raise ValueError(
            f"{patches.shape[0]} patches but {pos.shape[0]} positions; one (y, x) per patch"
        )
    N = patches.shape[1]
    batch_size = _check_int(batch_size, "batch_size")
    if canvas_shape is None:
        canvas_shape, origin = canvas_for_positions(pos, N)
    else:
        origin = (0, 0)
    stitcher = Stitcher(canvas_shape, N, crop, interpolation, origin, pixel_weight)
    for s in range(0, patches.shape[0], batch_size):
        stitcher.add(patches[s:s + batch_size], pos[s:s + batch_size])
    return stitcher.result()
