"""Statistics and image grids of *predicted* object patches, for spotting collapsed models.

A network that has collapsed predicts (nearly) the same flat patch for every input: its patches
have almost no spatial variance. The entries computed here make that visible in numbers
(``var_zero_mean`` near zero, ``global_std`` near zero) and in pictures (a grid of the predicted
amplitude and phase). Backends call :class:`PatchStatsLogger` with the model's predicted patches
-- never the ground truth.

Statistics are taken on the amplitude ``|O|`` of the patches (a real input is taken as the
amplitude itself). Patch layout is ``(B, ..., N, N)``: the first axis is the batch, the last two
the patch pixels, anything in between (e.g. the ``C = gridsize**2`` channel of a group, in
channels-first order) is flattened into individual patches in C order. TensorFlow's
channels-last ``(B, N, N, C)`` must be transposed to ``(B, C, N, N)`` first.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ptycho.atomic import atomic_write_json

__all__ = ["PHASES", "BACKENDS", "compute_patch_stats", "render_patch_grid", "PatchStatsLogger"]

PHASES = ("train", "val", "inference")
BACKENDS = ("tf", "torch")


def _to_numpy(x) -> np.ndarray:
    """A NumPy copy of an array, a torch tensor (detached, on CPU) or a TF eager tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return np.asarray(x)


def _flatten_patches(patches) -> np.ndarray:
    p = _to_numpy(patches)
    if p.dtype.kind not in "biufc":
        raise ValueError(f"patches must be numeric, got dtype {p.dtype}")
    if p.ndim < 3:
        raise ValueError(f"patches must have shape (B, ..., N, N), got {p.shape}")
    if p.shape[-1] != p.shape[-2] or p.shape[-1] == 0:
        raise ValueError(f"patches must end in square N x N pixels, got shape {p.shape} "
                         "(channels-last TF tensors must be transposed to (B, C, N, N))")
    if p.shape[0] == 0:
        raise ValueError(f"patches hold no batch entries, shape {p.shape}")
    return p.reshape((-1,) + p.shape[-2:])


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def compute_patch_stats(patches, *, phase: str, batch_idx: int, backend: str, gridsize: int,
                        n_per_patch: int = 4) -> dict:
    """Summary statistics of one batch of predicted patches (amplitude), as a JSON-ready dict.

    Parameters
    ----------
    patches : (B, ..., N, N) complex or real array (or torch / TF tensor).
    phase : ``"train"``, ``"val"`` or ``"inference"``.
    batch_idx : index of the batch within its phase (>= 0).
    backend : ``"tf"`` or ``"torch"``.
    gridsize : model gridsize (>= 1), recorded as given.
    n_per_patch : how many of the first patches get their own mean/std/min/max.

    Returns a dict of plain Python values: ``phase, batch_idx, batch_size (B), n_patches,
    patch_shape [N, N], backend, gridsize, global_mean, global_std, var_zero_mean`` (mean over
    patches of the mean squared deviation of each patch from its own mean), ``global_min,
    global_max``, ``per_patch`` (list of ``{index, mean, std, min, max}``), ``all_finite`` and
    ``n_nonfinite``. Statistics skip non-finite pixels; a statistic with no finite pixel to
    use is ``None``.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(batch_idx, bool) or int(batch_idx) != batch_idx or batch_idx < 0:
        raise ValueError(f"batch_idx must be an integer >= 0, got {batch_idx!r}")
    if isinstance(gridsize, bool) or int(gridsize) != gridsize or gridsize < 1:
        raise ValueError(f"gridsize must be an integer >= 1, got {gridsize!r}")
    if int(n_per_patch) != n_per_patch or n_per_patch < 0:
        raise ValueError(f"n_per_patch must be an integer >= 0, got {n_per_patch!r}")
    raw = _to_numpy(patches)
    flat = _flatten_patches(raw)
    amp = np.abs(flat.astype(np.complex128 if np.iscomplexobj(flat) else np.float64))
    finite = np.isfinite(amp)
    n_bad = int(amp.size - np.count_nonzero(finite))
    a = np.where(finite, amp, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # All-NaN patches give NaN statistics (reported as None), not warnings.
        warnings.simplefilter("ignore", RuntimeWarning)
        per_mean = np.nanmean(a, axis=(1, 2))
        per_var = np.nanmean((a - per_mean[:, None, None]) ** 2, axis=(1, 2))
        per_std = np.sqrt(per_var)
        per_min = np.nanmin(a, axis=(1, 2))
        per_max = np.nanmax(a, axis=(1, 2))
        stats = dict(global_mean=np.nanmean(a), global_std=np.nanstd(a),
                     var_zero_mean=np.nanmean(per_var), global_min=np.nanmin(a),
                     global_max=np.nanmax(a))
    per_patch = [dict(index=i, mean=_f(per_mean[i]), std=_f(per_std[i]), min=_f(per_min[i]),
                      max=_f(per_max[i]))
                 for i in range(min(int(n_per_patch), flat.shape[0]))]
    out = dict(phase=phase, batch_idx=int(batch_idx), batch_size=int(raw.shape[0]),
               n_patches=int(flat.shape[0]), patch_shape=[int(flat.shape[1]), int(flat.shape[2])],
               backend=backend, gridsize=int(gridsize))
    out.update({k: _f(v) for k, v in stats.items()})
    out.update(per_patch=per_patch, all_finite=n_bad == 0, n_nonfinite=n_bad)
    return out


def _tile_norm(img: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Normalise a tile to [0, 1] by its own finite range (non-finite pixels -> 0)."""
    ok = np.isfinite(img)
    if not ok.any():
        return np.zeros(img.shape), math.nan, math.nan
    lo, hi = float(img[ok].min()), float(img[ok].max())
    out = np.zeros(img.shape)
    if hi > lo:
        out[ok] = (img[ok] - lo) / (hi - lo)
    return out, lo, hi


def _render(rows: list[tuple[str, np.ndarray]], path: str | os.PathLike, title: str,
            dpi: int = 100) -> dict:
    """Draw, per labelled set of patches, one amplitude row and one phase row; returns the layout.

    Each tile is normalised to its own range (amplitude: grey map, phase: viridis) and titled
    with its index and range. The layout gives, per tile, its bounding box in pixels of the PNG
    ``[row0, row1, col0, col1]`` (end exclusive).
    """
    from ptycho.plotting import new_figure, save_figure_png

    if not rows:
        raise ValueError("no patches to render")
    ncols = max(p.shape[0] for _, p in rows)
    nrows = 2 * len(rows)
    tile_in = 1.6
    fig = new_figure((tile_in * ncols + 0.4, tile_in * 1.2 * nrows + 1.0), dpi=dpi)
    fig.suptitle(title, fontsize=9)
    tiles = []
    axes = []
    for r, (label, patches) in enumerate(rows):
        for kind_row, kind in enumerate(("amplitude", "phase")):
            for c in range(patches.shape[0]):
                z = patches[c]
                img = np.abs(z) if kind == "amplitude" else (
                    np.angle(z) if np.iscomplexobj(z) else np.zeros(z.shape))
                norm, lo, hi = _tile_norm(img)
                ax = fig.add_subplot(nrows, ncols, (2 * r + kind_row) * ncols + c + 1)
                ax.imshow(norm, cmap="gray" if kind == "amplitude" else "viridis", vmin=0.0,
                          vmax=1.0, interpolation="nearest", origin="upper")
                prefix = f"{label} " if label else ""
                short = "amp" if kind == "amplitude" else "phase"
                ax.set_title(f"{prefix}#{c} {short}\n[{lo:.3g}, {hi:.3g}]", fontsize=6)
                ax.set_xticks([])
                ax.set_yticks([])
                axes.append(ax)
                tiles.append(dict(set=label, kind=kind, index=c, vmin=_f(lo), vmax=_f(hi)))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1.0 - 0.9 / fig.get_figheight(),
                        wspace=0.08, hspace=0.45)
    fig.canvas.draw()
    height = int(round(fig.get_figheight() * dpi))
    for ax, tile in zip(axes, tiles):
        bb = ax.get_window_extent()
        tile["bbox_px"] = [int(math.ceil(height - bb.y1)), int(math.floor(height - bb.y0)),
                           int(math.ceil(bb.x0)), int(math.floor(bb.x1))]
    written = save_figure_png(fig, path, dpi=dpi)
    return dict(path=str(written), n_rows=nrows, n_cols=ncols,
                image_shape=[height, int(round(fig.get_figwidth() * dpi))], tiles=tiles)


def render_patch_grid(patches, path: str | os.PathLike, title: str, max_tiles: int = 8) -> dict:
    """PNG grid of the first ``max_tiles`` patches: amplitude row above phase row.

    patches (P, N, N) complex (or real = amplitude). Returns the layout (see ``PatchStatsLogger``).
    """
    flat = _flatten_patches(patches)
    return _render([("", flat[:max(1, int(max_tiles))])], path, title)


class PatchStatsLogger:
    """Collects patch statistics of a few batches per phase and writes them with a PNG grid.

    ``log(patches, phase, batch_idx)`` records at most ``limit`` batches per phase (later calls
    return ``None`` and cost nothing) and keeps the first ``n_tiles`` patches of the first
    logged batch of each phase for the grid. ``write()`` writes ``{backend}_patch_stats.json``
    (a list of entries, in logging order) and ``{backend}_patch_grid.png`` (per phase, one row
    of amplitude tiles and one of phase tiles) atomically into ``output_dir``, and returns the
    paths and the grid layout (``tiles`` with each tile's ``bbox_px`` in the PNG).
    """

    def __init__(self, output_dir: str | os.PathLike, backend: str, gridsize: int, limit: int = 4,
                 n_per_patch: int = 4, n_tiles: int = 4):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if isinstance(limit, bool) or int(limit) != limit or limit < 0:
            raise ValueError(f"limit must be an integer >= 0 (batches per phase), got {limit!r}")
        if int(n_tiles) != n_tiles or n_tiles < 1:
            raise ValueError(f"n_tiles must be an integer >= 1, got {n_tiles!r}")
        self.output_dir = Path(output_dir)
        self.backend = backend
        self.gridsize = int(gridsize)
        self.limit = int(limit)
        self.n_per_patch = int(n_per_patch)
        self.n_tiles = int(n_tiles)
        self.entries: list[dict] = []
        self._counts: dict[str, int] = {}
        self._grid: dict[str, np.ndarray] = {}

    @property
    def json_path(self) -> Path:
        return self.output_dir / f"{self.backend}_patch_stats.json"

    @property
    def png_path(self) -> Path:
        return self.output_dir / f"{self.backend}_patch_grid.png"

    def wants(self, phase: str) -> bool:
        """Whether a batch of ``phase`` would still be recorded (lets callers skip a copy)."""
        return self._counts.get(phase, 0) < self.limit

    def log(self, patches, phase: str, batch_idx: int,
            epoch: int | None = None) -> dict | None:
        """Record the statistics of one batch of predicted patches (with the 0-based training
        ``epoch`` when given); ``None`` past the limit."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if not self.wants(phase):
            return None
        arr = _to_numpy(patches)
        entry = compute_patch_stats(arr, phase=phase, batch_idx=batch_idx, backend=self.backend,
                                    gridsize=self.gridsize, n_per_patch=self.n_per_patch)
        if epoch is not None:
            entry["epoch"] = int(epoch)
        self.entries.append(entry)
        self._counts[phase] = self._counts.get(phase, 0) + 1
        if phase not in self._grid:
            self._grid[phase] = np.array(_flatten_patches(arr)[:self.n_tiles])
        return entry

    def write(self) -> dict:
        """Write the JSON list and the PNG grid; raises ``ValueError`` if nothing was logged."""
        if not self.entries:
            raise ValueError(f"no patch statistics were logged for backend {self.backend!r} "
                             f"(limit={self.limit}); nothing to write")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.json_path, self.entries)
        rows = [(ph, self._grid[ph]) for ph in PHASES if ph in self._grid]
        title = (f"{self.backend} predicted patches (gridsize {self.gridsize}); "
                 "each tile normalised to its own range")
        layout = _render(rows, self.png_path, title)
        layout["phases"] = [ph for ph, _ in rows]
        return dict(json=str(self.json_path), png=str(self.png_path), layout=layout)
