"""Per-step learning-rate schedules shared by both backends (pure Python, no framework).

``cosine``: over ``total_steps`` optimiser steps (step ``s = 0 … total_steps - 1``), a linear
warm-up over the first ``w = round(warmup_fraction * total_steps)`` steps up to ``peak``
(``peak * (s + 1) / w``), then a half cosine from ``peak`` at step ``w`` down to ``floor`` at the
last step. The value depends only on the step index, so a resumed run continues the curve.
``plateau`` (the default of ``training.lr_schedule``) is epoch-wise and lives in each backend's
plateau callback; it has no per-step function here.
"""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["LR_SCHEDULES", "cosine_learning_rate", "cosine_schedule"]

LR_SCHEDULES = ("plateau", "cosine")


def cosine_learning_rate(step: int, total_steps: int, peak: float, floor: float,
                         warmup_fraction: float) -> float:
    """Learning rate of optimiser step ``step`` (0-based) of the cosine schedule (module doc).

    Steps beyond ``total_steps - 1`` keep ``floor``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= floor <= peak:
        raise ValueError(f"the cosine schedule needs 0 <= floor <= peak, got floor={floor}, "
                         f"peak={peak}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    warmup = int(round(warmup_fraction * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_steps = total_steps - 1 - warmup
    t = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup) / decay_steps)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def cosine_schedule(total_steps: int, peak: float, floor: float,
                    warmup_fraction: float) -> Callable[[int], float]:
    """``step -> learning rate`` for :func:`cosine_learning_rate` with these settings."""
    cosine_learning_rate(0, total_steps, peak, floor, warmup_fraction)   # validate once

    def rate(step: int) -> float:
        return cosine_learning_rate(step, total_steps, peak, floor, warmup_fraction)

    return rate
