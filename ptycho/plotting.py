"""Shared matplotlib helpers: complex images, loss curves, simulation previews.

Every figure is built on a ``matplotlib.figure.Figure`` with the Agg canvas directly (no
``pyplot``), so no global figure registry or interactive backend is touched and the helpers are
safe in worker processes and headless servers. PNGs are rendered into memory and written with
:func:`ptycho.atomic.atomic_write_bytes`, so a reader never sees a half-written image.

Conventions: images are shown with row 0 at the top (``origin="upper"``), ``x`` = column,
``y`` = row; phases are in radians.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ptycho.atomic import atomic_write_bytes

__all__ = [
    "new_figure",
    "save_figure_png",
    "save_complex_image_png",
    "save_loss_curve_png",
    "save_simulation_preview_png",
]


def new_figure(figsize: tuple[float, float], dpi: int = 100):
    """A fresh ``Figure`` attached to an Agg canvas (not registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure_png(fig, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Render ``fig`` to PNG in memory and write it atomically to ``path``.

    The parent directory is created if missing. ``dpi`` defaults to the figure's own dpi, so pixel
    coordinates computed from ``Axes.get_window_extent`` match the saved image.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi if dpi is not None else fig.dpi)
    return atomic_write_bytes(dest, buf.getvalue())


def _as_2d(name: str, arr) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
    return a


def _imshow(fig, ax, img, title, cmap, vmin=None, vmax=None):
    im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, origin="upper", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return im


def save_complex_image_png(obj, path_amp: str | os.PathLike, path_phase: str | os.PathLike,
                           title: str) -> tuple[Path, Path]:
    """Save the amplitude and the phase of a complex 2-D image as two PNGs.

    ``obj`` is an (H, W) complex array (a real array is treated as amplitude with zero phase).
    Amplitude uses a grey colour map, phase (radians, in [-pi, pi]) a cyclic one; each has a
    colour bar and the title ``"{title}: amplitude"`` / ``"{title}: phase"``. Non-finite pixels
    are refused with a ``ValueError``. Returns the two written paths.
    """
    a = _as_2d("obj", obj)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"obj for {title!r} contains NaN or Inf")
    amp = np.abs(a)
    phase = np.angle(a) if np.iscomplexobj(a) else np.zeros(a.shape)
    aspect = a.shape[1] / a.shape[0]
    size = (min(4.5 * aspect + 1.2, 14.0), 4.5)
    out = []
    for img, path, label, cmap, lim in (
        (amp, path_amp, "amplitude", "gray", (None, None)),
        (phase, path_phase, "phase [rad]", "twilight", (-math.pi, math.pi)),
    ):
        fig = new_figure(size)
        ax = fig.add_subplot(1, 1, 1)
        _imshow(fig, ax, img, f"{title}: {label}", cmap, *lim)
        fig.tight_layout()
        out.append(save_figure_png(fig, path))
    return out[0], out[1]


def _series(history: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    """``history`` as 1-D float arrays; ``ValueError`` when it is empty or holds no finite value."""
    if not history:
        raise ValueError("history is empty: nothing to plot")
    series: dict[str, np.ndarray] = {}
    for key, values in history.items():
        v = np.asarray(list(values), dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"history[{key!r}] must be a 1-D sequence of numbers, got shape {v.shape}")
        series[str(key)] = v
    finite = np.concatenate([v[np.isfinite(v)] for v in series.values()])
    if finite.size == 0:
        raise ValueError(f"history has no finite values in any of {sorted(series)}")
    return series


def _plot_epochs(ax, series: Mapping[str, np.ndarray], title: str, ylabel: str) -> None:
    finite = np.concatenate([v[np.isfinite(v)] for v in series.values()])
    for key, v in series.items():
        epochs = np.arange(1, v.size + 1)
        ok = np.isfinite(v)
        ax.plot(epochs[ok], v[ok], marker="o" if v.size < 30 else None, markersize=3, label=key)
    if np.all(finite > 0) and finite.max() > 10 * finite.min():
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    n_epochs = max(v.size for v in series.values())
    if n_epochs <= 10:
        ax.set_xticks(np.arange(1, n_epochs + 1))
        ax.set_xlim(0.5, n_epochs + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def save_loss_curve_png(history: Mapping[str, Sequence[float]], path: str | os.PathLike,
                        title: str = "training history",
                        second: Mapping[str, Sequence[float]] | None = None,
                        second_title: str = "", ylabel: str = "loss",
                        second_ylabel: str = "value") -> Path:
    """Plot each series of ``history`` (e.g. ``{"loss": [...], "val_loss": [...]}``) per epoch;
    with ``second``, its series in a panel to the right titled ``second_title``. The y axes are
    labelled ``ylabel`` and ``second_ylabel``.

    The x axis is the epoch number (1-based). A panel's y axis is logarithmic when every finite
    value is positive and they span more than a factor of 10, linear otherwise (a Poisson NLL
    without ``log K!`` is often negative). Non-finite values are left out of the plot. An empty
    history, or one whose series hold no finite value at all, raises ``ValueError``.
    """
    panels = [(_series(history), title, ylabel)]
    if second:
        panels.append((_series(second), second_title, second_ylabel))
    fig = new_figure((6.0 * len(panels), 4.0))
    for i, (series, panel_title, label) in enumerate(panels):
        _plot_epochs(fig.add_subplot(1, len(panels), i + 1), series, panel_title, label)
    fig.tight_layout()
    return save_figure_png(fig, path)


def save_refinement_png(history: Sequence[Mapping[str, float]], path: str | os.PathLike,
                        title: str = "physics refinement") -> Path:
    """Plot the refinement's NLL per pattern above its final value against the step.

    ``history``: ``[{"step": int, "nll": float}, ...]`` in step order, the last entry the final
    NLL (``ptycho.refine.RefineResult.history``). The y axis is logarithmic; points at or below
    the final value (the last one) are left out. Fewer than two entries raise ``ValueError``.
    """
    if len(history) < 2:
        raise ValueError(f"refinement history needs at least 2 entries, got {len(history)}")
    steps = np.array([h["step"] for h in history], dtype=np.float64)
    gap = np.array([h["nll"] for h in history], dtype=np.float64) - float(history[-1]["nll"])
    ok = np.isfinite(gap) & (gap > 0)
    if not np.any(ok):
        raise ValueError("refinement history: no NLL above the final value to plot")
    fig = new_figure((6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps[ok], gap[ok], marker="o", markersize=3)
    ax.set_yscale("log")
    ax.set_xlabel("refinement step")
    ax.set_ylabel("NLL per pattern above the final value")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure_png(fig, path)


def save_simulation_preview_png(obj, probe, diffraction, positions, path: str | os.PathLike,
                                title: str, n_patterns: int = 4) -> Path:
    """One-page overview of a simulated scan.

    Top row: object amplitude with the scan positions (patch centres) overlaid, object phase
    (radians), probe amplitude. Bottom row: ``n_patterns`` diffraction amplitudes (evenly spaced
    through the scan) shown as ``log10(1 + amplitude**2)``, i.e. log counts.

    obj (H, W) complex; probe (N, N) complex; diffraction (M, N, N) amplitudes; positions (M, 2)
    ``(y, x)`` in object pixels.
    """
    o = _as_2d("obj", obj)
    p = _as_2d("probe", probe)
    d = np.asarray(diffraction)
    pos = np.asarray(positions, dtype=np.float64)
    if d.ndim != 3 or d.shape[0] == 0:
        raise ValueError(f"diffraction must have shape (M, N, N) with M >= 1, got {d.shape}")
    if pos.shape != (d.shape[0], 2):
        raise ValueError(f"positions must have shape ({d.shape[0]}, 2), got {pos.shape}")
    k = max(1, min(int(n_patterns), d.shape[0]))
    idx = np.unique(np.linspace(0, d.shape[0] - 1, k).round().astype(int))
    ncols = max(3, idx.size)
    fig = new_figure((3.2 * ncols, 6.6))
    fig.suptitle(title, fontsize=11)
    ax = fig.add_subplot(2, ncols, 1)
    _imshow(fig, ax, np.abs(o), f"object amplitude {o.shape[0]}x{o.shape[1]}", "gray")
    ax.plot(pos[:, 1], pos[:, 0], ".", color="tab:red", markersize=1.5)
    ax.set_xlim(-0.5, o.shape[1] - 0.5)
    ax.set_ylim(o.shape[0] - 0.5, -0.5)
    ax = fig.add_subplot(2, ncols, 2)
    _imshow(fig, ax, np.angle(o) if np.iscomplexobj(o) else np.zeros(o.shape),
            "object phase [rad]", "viridis")
    ax = fig.add_subplot(2, ncols, 3)
    _imshow(fig, ax, np.abs(p), f"probe amplitude {p.shape[0]}x{p.shape[1]}", "viridis")
    for j, m in enumerate(idx):
        ax = fig.add_subplot(2, ncols, ncols + 1 + j)
        counts = np.asarray(d[m], dtype=np.float64) ** 2
        _imshow(fig, ax, np.log10(1.0 + counts),
                f"pattern {m}: log10(1+counts)\n{counts.sum():.3g} photons", "magma")
    fig.tight_layout()
    return save_figure_png(fig, path)
