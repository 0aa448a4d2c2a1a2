"""Figures of ``ptycho-evaluate``: the aligned comparison and the Fourier ring correlation.

Built on ``ptycho.plotting.new_figure`` / ``save_figure_png`` (Agg canvas, no pyplot, atomic
PNG writes). Images are shown with row 0 at the top; phases are in radians; spatial frequencies
in cycles per pixel (0.5 = Nyquist).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ptycho.plotting import new_figure, save_figure_png

__all__ = ["save_comparison_png", "save_frc_png"]

_ROWS = (("amplitude", "amp", "gray"), ("phase [rad]", "phase", "viridis"))


def _panel(fig, ax, img, title, cmap, vmin, vmax, mask=None):
    im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, origin="upper", interpolation="nearest")
    if mask is not None and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors="tab:red", linewidths=0.7)
    ax.set_title(title, fontsize=8.5)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def _limits(*arrays: np.ndarray) -> tuple[float, float]:
    vals = np.concatenate([np.ravel(a) for a in arrays])
    lo, hi = float(np.min(vals)), float(np.max(vals))
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def save_comparison_png(images: Mapping[str, np.ndarray], metrics: Mapping[str, float],
                        alignment: Mapping[str, object], path: str | os.PathLike,
                        title: str) -> Path:
    """Reference, aligned reconstruction and difference, for amplitude (top) and phase (bottom).

    ``images``: ``ref_amp, rec_amp, ref_phase, rec_phase`` (H, W) float (the reconstruction
    already aligned; its phase unwrapped towards the reference) and ``mask`` (H, W) bool, the
    scanned pixels (outlined in red on the images; the difference is shown only there, grey
    elsewhere). Reference and reconstruction of a row share one colour scale (the range over the
    mask); the difference uses a symmetric diverging scale. Each difference panel is titled with
    MAE, PSNR, SSIM and the FRC thresholds from ``metrics``; the figure title adds the alignment.
    """
    from matplotlib import colormaps

    mask = np.asarray(images["mask"], dtype=bool)
    diverging = colormaps["RdBu_r"].with_extremes(bad="0.85")
    fig = new_figure((13.5, 8.2))
    for i, (label, p, cmap) in enumerate(_ROWS):
        ref, rec = np.asarray(images[f"ref_{p}"]), np.asarray(images[f"rec_{p}"])
        lo, hi = _limits(ref[mask], rec[mask])
        diff = np.where(mask, rec - ref, np.nan)
        lim = float(np.nanmax(np.abs(diff))) or 1e-12
        scale = (f" × {alignment['amplitude_scale']:.4g}" if p == "amp" else "")
        _panel(fig, fig.add_subplot(2, 3, 3 * i + 1), ref, f"reference {label}", cmap, lo, hi,
               mask)
        _panel(fig, fig.add_subplot(2, 3, 3 * i + 2), rec,
               f"reconstruction {label}{scale} (aligned)", cmap, lo, hi, mask)
        m = {k: metrics[f"{p}_{k}"] for k in ("mae", "psnr", "ssim", "frc50", "frc17")}
        _panel(fig, fig.add_subplot(2, 3, 3 * i + 3), diff,
               f"difference: MAE {m['mae']:.3g}, PSNR {m['psnr']:.1f} dB, SSIM {m['ssim']:.3f}\n"
               f"FRC 0.5 at {m['frc50']:.3f}, 1/7 at {m['frc17']:.3f} cycles/px",
               diverging, -lim, lim)
    if alignment.get("shift_dy") is None:
        shift = "no shift registration"
    else:
        shift = f"shift ({alignment['shift_dy']:+.2f}, {alignment['shift_dx']:+.2f}) px"
    fig.suptitle(f"{title}\n{shift}, phase offset {alignment['phase_offset']:+.3f} rad, "
                 f"amplitude scale {alignment['amplitude_scale']:.4g}", fontsize=10)
    fig.tight_layout()
    return save_figure_png(fig, path)


def save_frc_png(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 metrics: Mapping[str, float], path: str | os.PathLike, title: str) -> Path:
    """FRC of amplitude and phase against spatial frequency, thresholds 0.5 and 1/7 marked.

    ``curves``: ``{"amp": (freqs, frc), "phase": (freqs, frc)}`` with freqs in cycles/pixel;
    the crossings ``{amp,phase}_frc50`` / ``_frc17`` from ``metrics`` are marked with dotted
    vertical lines.
    """
    fig = new_figure((7.0, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    for (label, p, _), colour in zip(_ROWS, ("tab:blue", "tab:orange")):
        freqs, curve = curves[p]
        ax.plot(freqs, curve, color=colour, lw=1.5,
                label=f"{label.split()[0]}: 0.5 at {metrics[p + '_frc50']:.3f}, "
                      f"1/7 at {metrics[p + '_frc17']:.3f}")
        for key, style in (("frc50", ":"), ("frc17", "-.")):
            ax.axvline(metrics[f"{p}_{key}"], color=colour, ls=style, lw=0.9)
    ax.axhline(0.5, color="black", ls="--", lw=0.9, label="threshold 0.5")
    ax.axhline(1.0 / 7.0, color="grey", ls="--", lw=0.9, label="threshold 1/7")
    ax.set_xlim(0.0, 0.5)
    ax.set_ylim(min(-0.1, float(np.min([np.min(c) for _, c in curves.values()])) - 0.05), 1.05)
    ax.set_xlabel("spatial frequency [cycles/pixel]")
    ax.set_ylabel("Fourier ring correlation")
    ax.set_title(f"FRC: {title}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return save_figure_png(fig, path)
