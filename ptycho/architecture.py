"""Filter counts of the PtychoPINN network, shared by both backends and the weight converter.

For a patch side ``N`` (a power of two >= 16) the encoder has ``log2(N) - 3`` stages whose
filters double from stage to stage and end at 256 (N=64: 64, 128, 256); the decoders mirror
the encoder without its deepest stage (N=64: 128, 64). ``filter_scale`` multiplies every
count (rounded, at least 1): 1 is the reference network (about 2.3 M parameters at N=64),
0.5 has a quarter of its parameters and convolution FLOPs, which trains several times faster
on a CPU.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["network_filters", "check_filter_scale", "FILTER_SCALE_RANGE"]

FILTER_SCALE_RANGE = (1.0 / 64.0, 4.0)


def check_filter_scale(filter_scale) -> float:
    """``filter_scale`` as a float in ``FILTER_SCALE_RANGE``, else ``ValueError`` naming it."""
    lo, hi = FILTER_SCALE_RANGE
    if isinstance(filter_scale, bool) or not isinstance(filter_scale, (int, float, np.number)) \
            or not (lo <= float(filter_scale) <= hi):
        raise ValueError(f"filter_scale must be a number in [{lo:g}, {hi:g}], got {filter_scale!r}")
    return float(filter_scale)


def network_filters(N: int, filter_scale: float = 1.0) -> tuple[list[int], list[int]]:
    """``(encoder, decoder)`` filter counts, e.g. N=64 -> ``[64, 128, 256]``, ``[128, 64]``."""
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 16 or N & (N - 1):
        raise ValueError(f"N must be a power of two >= 16, got {N!r}")
    scale = check_filter_scale(filter_scale)
    n_stages = int(round(math.log2(int(N)))) - 3
    enc = [max(1, int(round(scale * 256 / 2 ** (n_stages - 1 - i)))) for i in range(n_stages)]
    return enc, enc[:-1][::-1]
