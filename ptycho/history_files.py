"""Per-epoch training history on disk, the same for both backends.

``history.json`` (one list per column; non-finite values, e.g. ``val_loss`` without validation
data, become ``null``), ``history.csv`` (one row per epoch; non-finite values are empty cells)
and ``loss_curve.png``: the training and validation loss as optimised and, when the history has
them, the full Poisson NLL (``*_nll_full``, which adds ``log K!`` so it is comparable between
datasets and approaches the noise floor from above) in a second panel. All written atomically.
:func:`training_summary` is the bundle manifest's ``history_summary``, with the same keys on
both backends.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping

__all__ = ["training_summary", "write_history"]

LOSS_KEYS = ("train_loss", "val_loss")
FULL_NLL_KEYS = ("train_nll_full", "val_nll_full")


def _finite(value: Any) -> bool:
    return value is not None and (not isinstance(value, float) or math.isfinite(value))


def _curves(history: Mapping[str, list], keys) -> dict[str, list]:
    return {k: history[k] for k in keys if any(_finite(v) for v in history.get(k, []))}


def write_history(history: Mapping[str, list], output_dir: Path, title: str,
                  full_nll: bool = True) -> dict[str, Path]:
    """Write the three files into ``output_dir``; returns their paths (``"json"``, ``"csv"``
    and, when some loss is finite, ``"png"``). ``title`` heads the loss panel; ``full_nll``
    False (supervised training, whose full NLL is not computed) omits the second panel."""
    from ptycho.atomic import atomic_write_json, atomic_write_text
    from ptycho.plotting import save_loss_curve_png

    output_dir = Path(output_dir)
    data = {k: [v if _finite(v) else None for v in vals] for k, vals in history.items()}
    paths = {"json": atomic_write_json(output_dir / "history.json", data)}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = list(history)
    writer.writerow(keys)
    for row in zip(*(history[k] for k in keys)):
        writer.writerow([(repr(v) if isinstance(v, float) else v) if _finite(v) else ""
                         for v in row])
    paths["csv"] = atomic_write_text(output_dir / "history.csv", buf.getvalue())
    losses = _curves(history, LOSS_KEYS)
    if losses:
        full = _curves(history, FULL_NLL_KEYS) if full_nll else {}
        paths["png"] = save_loss_curve_png(
            losses, output_dir / "loss_curve.png", title=title, second=full or None,
            second_title="full Poisson NLL per pixel (with log K!)",
            ylabel="MAE" if not full_nll else "Poisson NLL per pixel (without log K!)",
            second_ylabel="NLL per pixel")
    return paths


def _float_or_none(value: Any) -> float | None:
    return float(value) if _finite(value) else None


def training_summary(history: Mapping[str, list], *, best_epoch: int | None, monitor: str,
                     best_monitored_loss: float | None, stopped_early: bool,
                     intensity_scale_initial: float, intensity_scale_trained: float) -> dict:
    """The ``history_summary`` of a model bundle, the same keys for both backends.

    ``best_epoch`` is 0-based like the history's ``epoch`` column (the CLIs print it counted
    from 1); None or a negative value (no epoch was scored) becomes None. ``final`` holds the
    last finite value of every loss column (None when the column has none).
    """
    def last_finite(key: str) -> float | None:
        vals = [v for v in history.get(key, []) if _finite(v)]
        return float(vals[-1]) if vals else None

    best = None if best_epoch is None or best_epoch < 0 else int(best_epoch)
    return {"epochs_run": len(history.get("epoch", [])), "best_epoch": best, "monitor": monitor,
            "best_monitored_loss": _float_or_none(best_monitored_loss),
            "stopped_early": bool(stopped_early),
            "final": {k: last_finite(k) for k in LOSS_KEYS + FULL_NLL_KEYS},
            "intensity_scale_initial": float(intensity_scale_initial),
            "intensity_scale_trained": float(intensity_scale_trained)}
