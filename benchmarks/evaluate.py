"""One quality measurement for every method: the same mask, the same metrics.

Every reconstruction (each backend's stitched object, each Pty-chi run) is compared with the
ground truth ``objectGuess`` by :func:`ptycho.metrics.evaluate_reconstruction` (global phase
offset removed, least-squares amplitude scale) on the *illuminated* region of the test scan:
pixels where the summed probe intensity over all scan positions is at least ``ILLUMINATION_FRACTION``
of its maximum. Pixels outside it are not constrained by any measurement, so neither an
iterative solver nor the network can be judged there; using one mask for all methods keeps the
comparison fair. The mask is ``ptycho.illumination.illumination_mask``, the one the inference
CLIs' own ``metrics.json`` uses.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ptycho.illumination import ILLUMINATION_FRACTION, illumination_mask

__all__ = ["ILLUMINATION_FRACTION", "illumination_mask", "quality", "QUALITY_KEYS", "clean"]

QUALITY_KEYS = ("amp_ssim", "phase_ssim", "amp_psnr", "phase_psnr", "amp_frc50", "phase_frc50",
                "amp_mae", "phase_mae")


def clean(value):
    """JSON-safe copy: non-finite floats become None, NumPy scalars plain Python numbers."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def quality(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray,
            origin: Optional[tuple] = None) -> dict:
    """Metrics of ``recon`` against ``truth`` on ``mask`` (selected keys, JSON-safe).

    ``recon`` may be a canvas whose pixel (0, 0) is object pixel ``origin`` (y0, x0); it is
    placed on the truth's grid first (pixels it does not cover become 0).
    """
    from ptycho.metrics import evaluate_reconstruction

    r = np.asarray(recon)
    t = np.asarray(truth)
    if origin is not None and (tuple(origin) != (0, 0) or r.shape != t.shape):
        y0, x0 = (int(v) for v in origin)
        placed = np.zeros(t.shape, dtype=np.complex64)
        ys, xs = max(0, -y0), max(0, -x0)
        yd, xd = max(0, y0), max(0, x0)
        h = min(r.shape[0] - ys, t.shape[0] - yd)
        w = min(r.shape[1] - xs, t.shape[1] - xd)
        if h > 0 and w > 0:
            placed[yd:yd + h, xd:xd + w] = r[ys:ys + h, xs:xs + w]
        r = placed
    if r.shape != t.shape:
        raise ValueError(f"reconstruction {r.shape} and truth {t.shape} differ in shape")
    m = evaluate_reconstruction(r, t, mask=mask)
    return clean({k: m[k] for k in QUALITY_KEYS})
