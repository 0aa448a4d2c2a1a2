"""``python -m ptycho.evaluate`` (``ptycho-evaluate``): compare a reconstruction with a reference.

The reference is the ground truth (``objectGuess`` of a data NPZ, normally the test scan file)
or another reconstruction. Steps:

1. **Read** the reconstruction: ``object`` (or ``obj``) complex (H, W), or ``amplitude`` +
   ``phase``; optional ``illuminated_mask`` (else ``scanned_mask``, else ``weight > 0``),
   ``origin`` / ``canvas_y`` / ``canvas_x`` (object pixel of canvas pixel (0, 0)), scan
   positions in canvas pixels (``scan_positions`` (M, 2) (y, x), or ``ycoords`` /
   ``xcoords``) and ``stitch_crop``. Both
   inference CLIs write these keys. A data file gives ``objectGuess`` in object pixels
   (origin (0, 0)), its scan positions and the patch side N.
2. **Place** both on one pixel grid: by their origins when both are known; else the images must
   have the same shape, or the reconstruction must fit inside the reference, where it is located
   by normalised complex cross-correlation (integer pixels).
3. **Scanned region**: the reconstruction's mask (the inference CLIs store the illuminated
   region, ``ptycho.illumination``), else the union of squares of side
   ``stitch_crop`` (or N, or ``--patch-size``) around the scan positions, intersected with the
   reference's own mask and extent. Without any of these the whole overlap is used.
4. **Align** (unless ``--no-align``): the sub-pixel shift, searched within ``--max-shift``
   (cross-correlation peak and zero shift, each refined by least squares; the lower residual
   wins); the *reference* is moved onto the reconstruction (Fourier shift, zero-padded) so
   that the reconstruction is never resampled; then the global phase offset (with
   ``--phase-ramp`` a linear phase ramp) and the amplitude scale
   (``ptycho.metrics.evaluate_reconstruction``).
5. **Metrics** on the scanned region (``--crop-to-scan``: on the largest rectangle inside it).

Writes into ``--output_dir``: ``metrics.json``, ``metrics.csv`` (one row), ``comparison.png``
and ``frc.png``, each atomically, and prints a short table. Exit status 0 on success, 2 for
invalid input (the message names the file and the key).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ptycho.evaluation_io import EvaluationError, ObjectImage, load_object_file, npz_keys

__all__ = [
    "EvaluationError",
    "ObjectImage",
    "Evaluation",
    "load_object_file",
    "reference_offset",
    "largest_rectangle",
    "compare",
    "evaluate_files",
    "flat_row",
    "write_outputs",
    "format_table",
    "build_parser",
    "main",
]

OUTPUT_FILES = {"json": "metrics.json", "csv": "metrics.csv", "comparison": "comparison.png",
                "frc": "frc.png"}
METRIC_KEYS = tuple(f"{p}_{m}" for p in ("amp", "phase")
                    for m in ("mae", "mse", "psnr", "ssim", "frc50", "frc17"))
MIN_LOCATE_SCORE = 0.3   # normalised cross-correlation needed to accept an integer placement
MIN_REFERENCE_COVERAGE = 0.9   # share of the scanned region that must lie on the reference
MIN_REGISTER_CORRELATION = 0.3   # below it a registered shift is reported as unreliable
DEFAULT_MAX_SHIFT = 3.0  # pixels
# Extra reference pixels around the analysed window when shifting it: the Fourier shift of a
# cut-out window rings at its edges, and this keeps the ringing away from the analysed pixels.
REGISTER_PAD = 16


def _locate(small: np.ndarray, mask: np.ndarray,
            large: np.ndarray) -> tuple[tuple[int, int], float]:
    """Integer offset of ``small``'s pixel (0, 0) inside ``large`` maximising the normalised
    complex cross-correlation over ``mask`` (invariant to phase offset and amplitude scale)."""
    HL, WL = large.shape
    Hs, Ws = small.shape
    m = np.zeros((HL, WL))
    m[:Hs, :Ws] = mask
    s = np.zeros((HL, WL), dtype=np.complex128)
    s[:Hs, :Ws] = np.where(mask, small - small[mask].mean(), 0.0)
    n = float(mask.sum())

    def corr(a, b):
        return np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b)))

    num = np.abs(corr(large, s))[:HL - Hs + 1, :WL - Ws + 1]
    local_sum = corr(large, m)[:HL - Hs + 1, :WL - Ws + 1]
    local_sq = corr(np.abs(large) ** 2, m).real[:HL - Hs + 1, :WL - Ws + 1]
    var = np.maximum(local_sq - np.abs(local_sum) ** 2 / n, 0.0)
    denom = np.sqrt(var * float(np.sum(np.abs(s) ** 2)))
    score = np.divide(num, denom, out=np.zeros_like(num), where=denom > 1e-12 * denom.max())
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    return (int(iy), int(ix)), float(score[iy, ix])


def reference_offset(recon: ObjectImage, ref: ObjectImage) -> tuple[tuple[int, int], str]:
    """``(oy, ox)`` such that reconstruction pixel (r, c) is reference pixel (r + oy, c + ox).

    Returns the offset and how it was found: ``"origin"``, ``"same shape"`` or
    ``"cross-correlation (score s)"``. Raises :class:`EvaluationError` when the grids cannot be
    related or do not overlap.
    """
    (H, W), (HR, WR) = recon.shape, ref.shape
    if recon.origin is not None and ref.origin is not None:
        off = (recon.origin[0] - ref.origin[0], recon.origin[1] - ref.origin[1])
        how = "origin"
    elif (H, W) == (HR, WR):
        off, how = (0, 0), "same shape"
    elif H <= HR and W <= WR:
        mask = recon.mask if recon.mask is not None else np.ones((H, W), dtype=bool)
        off, score = _locate(recon.obj, mask, ref.obj)
        if score < MIN_LOCATE_SCORE:
            raise EvaluationError(
                f"{recon.source}: reconstruction {H}x{W} has no 'origin' and could not be located "
                f"inside the {HR}x{WR} reference {ref.source} (best normalised correlation "
                f"{score:.2f} < {MIN_LOCATE_SCORE}); store 'origin' (y0, x0) in the reconstruction")
        how = f"cross-correlation (score {score:.3f})"
    else:
        raise EvaluationError(
            f"shape mismatch: reconstruction {recon.source} key '{recon.key}' is {H}x{W} but "
            f"reference {ref.source} key '{ref.key}' is {HR}x{WR}, and without an 'origin' in "
            "both files a reconstruction larger than the reference cannot be placed on it")
    if not (max(0, -off[0]) < min(H, HR - off[0]) and max(0, -off[1]) < min(W, WR - off[1])):
        raise EvaluationError(
            f"reconstruction {recon.source} ({H}x{W}, origin {recon.origin}) and reference "
            f"{ref.source} ({HR}x{WR}, origin {ref.origin}) do not overlap")
    return off, how


def _window(img: np.ndarray, top: int, left: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``img[top:top+h, left:left+w]`` with zero fill outside, and the mask of pixels inside."""
    out = np.zeros((h, w), dtype=img.dtype)
    valid = np.zeros((h, w), dtype=bool)
    r0, r1 = max(top, 0), min(top + h, img.shape[0])
    c0, c1 = max(left, 0), min(left + w, img.shape[1])
    if r0 < r1 and c0 < c1:
        out[r0 - top:r1 - top, c0 - left:c1 - left] = img[r0:r1, c0:c1]
        valid[r0 - top:r1 - top, c0 - left:c1 - left] = True
    return out, valid


def _squares_mask(shape, positions: np.ndarray, side: int) -> np.ndarray:
    """Union of ``side``×``side`` squares placed like the stitcher: rows floor(y) - side//2 ..."""
    mask = np.zeros(shape, dtype=bool)
    for y, x in np.floor(positions).astype(np.int64):
        r0, c0 = y - side // 2, x - side // 2
        mask[max(r0, 0):max(r0 + side, 0), max(c0, 0):max(c0 + side, 0)] = True
    return mask


def _scanned_region(recon: ObjectImage, ref: ObjectImage, off,
                    patch_size) -> tuple[np.ndarray, str]:
    """Scanned region in reconstruction pixels and a description of its source."""
    if recon.mask is not None:
        return recon.mask.copy(), recon.mask_source
    if recon.positions is not None:
        pos, where = recon.positions, recon.source
    elif ref.positions is not None:
        pos, where = ref.positions - np.asarray(off, dtype=np.float64), ref.source
    else:
        return np.ones(recon.shape, dtype=bool), "whole image (no scanned mask or scan positions)"
    side = patch_size or recon.footprint or ref.footprint
    if side is None:
        raise EvaluationError(f"{where}: scan positions found but no patch size to turn them into "
                              "a scanned region; pass --patch-size")
    mask = _squares_mask(recon.shape, pos, int(side))
    if not mask.any():
        raise EvaluationError(f"{where}: the scan positions ± {side}/2 fall outside the "
                              f"{recon.shape[0]}x{recon.shape[1]} reconstruction")
    return mask, f"scan positions ± {int(side)}/2 ({where})"


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def largest_rectangle(mask) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` (end exclusive) of the largest all-True axis-aligned
    rectangle of a 2-D bool mask (histogram-stack method, O(H W)); ties keep the first found."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or not m.any():
        raise ValueError(f"mask must be 2-D with at least one True pixel, got shape {m.shape}")
    heights = np.zeros(m.shape[1], dtype=np.int64)
    best, rect = 0, (0, 0, 0, 0)
    for r in range(m.shape[0]):
        heights = np.where(m[r], heights + 1, 0)
        stack: list[tuple[int, int]] = []
        for c, h in enumerate(list(heights) + [0]):
            start = c
            while stack and stack[-1][1] >= h:
                s, sh = stack.pop()
                if sh * (c - s) > best:
                    best, rect = sh * (c - s), (r - sh + 1, r + 1, s, c)
                start = s
            stack.append((start, int(h)))
    return rect


def _coarse_shift(ref: np.ndarray, rec: np.ndarray, m: np.ndarray,
                  max_shift: float) -> np.ndarray:
    """Integer ``s`` within ±max_shift maximising the cross-correlation of ``rec`` with ``ref``
    moved by ``s`` (both mean-removed over ``m`` and Hann-windowed)."""
    win = np.outer(np.hanning(m.shape[0]), np.hanning(m.shape[1])) * m

    def prep(x):
        return (x - x[m].mean()) * win

    xc = np.abs(np.fft.ifft2(np.fft.fft2(prep(rec)) * np.conj(np.fft.fft2(prep(ref)))))
    dy = np.fft.fftfreq(m.shape[0]) * m.shape[0]
    dx = np.fft.fftfreq(m.shape[1]) * m.shape[1]
    allowed = (np.abs(dy)[:, None] <= max_shift) & (np.abs(dx)[None, :] <= max_shift)
    iy, ix = np.unravel_index(int(np.argmax(np.where(allowed, xc, -1.0))), xc.shape)
    return np.array([dy[iy], dx[ix]])


def _register(recon: np.ndarray, ref_big: np.ndarray, mask: np.ndarray, margin: int,
              max_shift: float) -> tuple[np.ndarray, float, list[str]]:
    """Shift ``s`` (dy, dx), ``|s| <= max_shift``, with ``recon ≈ alpha * translate(ref, s)``.

    ``ref_big`` is the reference on the reconstruction's grid with ``margin`` extra pixels on
    every side. The cross-correlation peak within ±max_shift and zero shift are both refined by
    Nelder-Mead on the relative squared residual over ``mask`` of the mean-removed images with
    the best complex factor ``alpha`` (global phase and amplitude scale; the reference moved by
    the library's Fourier shift); the lower residual wins. Returns the shift, the correlation
    coefficient ``sqrt(1 - residual)`` at it (1 = identical up to phase, scale and offset) and
    warnings.
    """
    from scipy.optimize import minimize

    from ptycho.physics import translate

    r0, r1, c0, c1 = _bbox(mask)
    m = mask[r0:r1, c0:c1]
    rec = recon[r0:r1, c0:c1]
    sub = ref_big[r0:r1 + 2 * margin, c0:c1 + 2 * margin]
    target = rec[m] - rec[m].mean()
    norm = float(np.sum(np.abs(target) ** 2)) or 1.0

    def cost(s):
        moved = translate(sub[None], np.asarray([s], dtype=np.float64), "fourier")[0]
        t = moved[margin:margin + r1 - r0, margin:margin + c1 - c0][m]
        t = t - t.mean()
        den = np.vdot(t, t).real
        alpha = np.vdot(t, target) / den if den > 0 else 0.0
        return float(np.sum(np.abs(target - alpha * t) ** 2)) / norm

    s0 = _coarse_shift(sub[margin:margin + r1 - r0, margin:margin + c1 - c0], rec, m, max_shift)
    starts = [np.zeros(2)] + ([s0] if np.any(s0 != 0) else [])
    inside, outside = [], []
    for start in starts:
        simplex = start + np.array([[0.0, 0.0], [0.2, 0.0], [0.0, 0.2]])
        res = minimize(cost, start, method="Nelder-Mead",
                       options={"xatol": 1e-3, "fatol": 1e-12, "initial_simplex": simplex})
        (inside if np.max(np.abs(res.x)) <= max_shift else outside).append((res.fun, res.x))
    warnings = []
    if outside and (not inside or min(c[0] for c in outside) < min(c[0] for c in inside)):
        best = min(outside, key=lambda c: c[0])[1]
        warnings.append(f"the best-fitting shift ({-best[0]:.2f}, {-best[1]:.2f}) px exceeds "
                        f"--max-shift {max_shift:g}; the registration was limited to it")
    if not inside:
        inside = [(cost(s), s) for s in starts]
    fun, s = min(inside, key=lambda c: c[0])
    if np.max(np.abs(s)) > max_shift - 0.5 and not warnings:
        warnings.append(f"the registered shift ({-s[0]:.2f}, {-s[1]:.2f}) px is at the edge of "
                        f"--max-shift {max_shift:g}; the true shift may be larger")
    correlation = math.sqrt(min(max(1.0 - fun, 0.0), 1.0))
    if correlation < MIN_REGISTER_CORRELATION:
        warnings.append(f"the reconstruction correlates weakly with the reference (correlation "
                        f"{correlation:.2f} at the registered shift): the shift may be spurious; "
                        "consider --no-shift")
    return s, correlation, warnings


@dataclass
class Evaluation:
    """Everything one comparison produced (images are the analysed window, aligned).

    metrics: ``{amp,phase}_{mae,mse,psnr,ssim,frc50,frc17}`` (frc in cycles/pixel, psnr in dB,
    phase errors in radians). alignment: ``shift_dy``/``shift_dx`` (pixels that move the
    reconstruction onto the reference; None when not registered), ``shift_correlation``
    (correlation coefficient of the mean-removed images at that shift), ``phase_offset`` (rad),
    ``amplitude_scale`` and ``phase_ramp_a`` (rad) / ``_dy`` / ``_dx`` (rad per pixel, about the
    window's pixel (0, 0); None without ``--phase-ramp``). region: window ``row0, row1, col0,
    col1`` in reconstruction pixels, ``n_pixels``, ``mask_source``, ``reference_offset``,
    ``placement``. images: ``ref_amp, rec_amp, ref_phase, rec_phase, mask``; frc: ``amp`` /
    ``phase`` -> (freqs, curve); warnings: messages about the registration.
    """

    recon: ObjectImage
    reference: ObjectImage
    metrics: dict
    alignment: dict
    region: dict
    options: dict
    images: dict
    frc: dict
    warnings: list


def _aligned_images(rec: np.ndarray, ref: np.ndarray, res: dict, align: bool) -> dict:
    """Apply the alignment ``evaluate_reconstruction`` reported, exactly as it applied it."""
    r = rec.astype(np.complex128)
    if align:
        if res.get("phase_ramp") is not None:
            a, b, c = res["phase_ramp"]
            yy, xx = np.indices(r.shape, dtype=np.float64)
            r = r * np.exp(1j * (a + b * yy + c * xx))
        else:
            r = r * np.exp(1j * res["phase_offset"])
    ph_t = np.angle(ref)
    return {"ref_amp": np.abs(ref), "rec_amp": np.abs(r) * res["amplitude_scale"],
            "ref_phase": ph_t, "rec_phase": ph_t + np.angle(np.exp(1j * (np.angle(r) - ph_t)))}


def compare(recon: ObjectImage, ref: ObjectImage, *, align: bool = True, shift: bool = True,
            phase_ramp: bool = False, crop_to_scan: bool = False, patch_size: int | None = None,
            max_shift: float = DEFAULT_MAX_SHIFT) -> Evaluation:
    """Place, mask, align and measure ``recon`` against ``ref`` (module docstring, steps 2-5)."""
    from ptycho.metrics import evaluate_reconstruction, frc
    from ptycho.physics import translate

    if not max_shift > 0:
        raise EvaluationError(f"--max-shift must be > 0 pixels, got {max_shift}")
    if patch_size is not None and patch_size < 1:
        raise EvaluationError(f"--patch-size must be >= 1 pixel, got {patch_size}")
    off, how = reference_offset(recon, ref)
    H, W = recon.shape
    mask, mask_source = _scanned_region(recon, ref, off, patch_size)
    register = align and shift
    margin = int(math.ceil(max_shift)) + REGISTER_PAD if register else 0
    ref_big, valid_big = _window(ref.obj, off[0] - margin, off[1] - margin, H + 2 * margin,
                                 W + 2 * margin)
    if ref.mask is not None:
        valid_big &= _window(ref.mask, off[0] - margin, off[1] - margin, H + 2 * margin,
                             W + 2 * margin)[0]
    inner = np.s_[margin:margin + H, margin:margin + W]
    n_scanned = int(mask.sum())
    mask &= valid_big[inner]
    coverage_warnings = []
    if 0 < mask.sum() < MIN_REFERENCE_COVERAGE * n_scanned:
        HR, WR = ref.shape
        coverage_warnings.append(
            f"only {mask.sum() / n_scanned:.0%} of the scanned region of {recon.source} "
            f"({H}x{W}, {mask_source}) lies on the {HR}x{WR} reference {ref.source} (placed by "
            f"{how}, offset {tuple(int(o) for o in off)}); the rest is not scored — check that "
            "both describe the same scan")
    if not mask.any():
        raise EvaluationError(f"the scanned region of {recon.source} ({mask_source}) lies outside "
                              f"the reference {ref.source} (offset {off}, placed by {how})")
    s, corr, warnings = np.zeros(2), None, []
    if register:
        s, corr, warnings = _register(recon.obj, ref_big, mask, margin, max_shift)
        if phase_ramp:
            # A phase ramp biases the shift estimate: fit it with the first shift, take it out
            # of a copy of the reconstruction and register again.
            from ptycho.metrics import remove_phase_ramp

            moved = translate(ref_big[None], s[None], "fourier")[0][inner]
            _, (_, b, c) = remove_phase_ramp(recon.obj, moved, mask)
            yy, xx = np.indices(recon.shape, dtype=np.float64)
            s, corr, warnings = _register(recon.obj * np.exp(1j * (b * yy + c * xx)), ref_big,
                                          mask, margin, max_shift)
        ref_big = translate(ref_big[None], s[None], "fourier")[0]
        from scipy.ndimage import binary_erosion

        moved = translate(valid_big[None].astype(np.float64), s[None], "bilinear")[0] > 0.999
        mask &= binary_erosion(moved, iterations=1)[inner]
        if not mask.any():
            raise EvaluationError("no scanned pixel is left after moving the reference by "
                                  f"({s[0]:.2f}, {s[1]:.2f}) px")
    ref_al = ref_big[inner]
    r0, r1, c0, c1 = largest_rectangle(mask) if crop_to_scan else _bbox(mask)
    if min(r1 - r0, c1 - c0) < 4:
        raise EvaluationError(f"the analysed region rows {r0}:{r1}, cols {c0}:{c1} of "
                              f"{recon.source} is smaller than 4x4 pixels")
    rec_w, ref_w, m_w = recon.obj[r0:r1, c0:c1], ref_al[r0:r1, c0:c1], mask[r0:r1, c0:c1]
    res = evaluate_reconstruction(rec_w, ref_w, mask=m_w, align=align, register=False,
                                  phase_ramp=phase_ramp)
    images = _aligned_images(rec_w, ref_w, res, align)
    images["mask"] = m_w
    curves = {p: frc(images[f"rec_{p}"], images[f"ref_{p}"]) for p in ("amp", "phase")}
    ramp = res["phase_ramp"]
    alignment = {
        "shift_dy": float(-s[0]) if register else None,
        "shift_dx": float(-s[1]) if register else None, "shift_correlation": corr,
        "phase_offset": res["phase_offset"], "amplitude_scale": res["amplitude_scale"],
        "phase_ramp_a": ramp[0] if ramp else None, "phase_ramp_dy": ramp[1] if ramp else None,
        "phase_ramp_dx": ramp[2] if ramp else None}
    region = {"row0": r0, "row1": r1, "col0": c0, "col1": c1, "n_pixels": res["n_pixels"],
              "mask_source": mask_source, "reference_offset": [int(off[0]), int(off[1])],
              "placement": how}
    options = {"align": align, "shift": shift, "phase_ramp": phase_ramp,
               "crop_to_scan": crop_to_scan, "patch_size": patch_size, "max_shift": max_shift}
    return Evaluation(recon=recon, reference=ref, metrics={k: res[k] for k in METRIC_KEYS},
                      alignment=alignment, region=region, options=options, images=images,
                      frc=curves, warnings=coverage_warnings + warnings)


def evaluate_files(recon_path, reference_path=None, **options) -> Evaluation:
    """Load both files and :func:`compare` them; without ``reference_path`` the reconstruction
    file's own ``objectGuess`` is the reference (an error when it has none)."""
    recon = load_object_file(recon_path, "reconstruction")
    if reference_path is None:
        if "objectGuess" not in npz_keys(recon.source) or recon.key == "objectGuess":
            raise EvaluationError(f"{recon.source}: no reference given and the file holds no "
                                  "'objectGuess' besides the reconstruction; pass --reference "
                                  "(the test data NPZ or another reconstruction)")
        reference_path = recon.source
    return compare(recon, load_object_file(reference_path, "reference"), **options)


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def flat_row(ev: Evaluation) -> dict:
    """The single CSV row: inputs, metrics, alignment and region as scalars."""
    row = {"reconstruction": ev.recon.source, "reference": ev.reference.source,
           "reference_kind": ev.reference.kind}
    row.update(ev.metrics)
    row.update(ev.alignment)
    row.update({k: ev.region[k] for k in ("n_pixels", "row0", "row1", "col0", "col1")})
    return row


def _as_json(ev: Evaluation) -> dict:
    def describe(img: ObjectImage) -> dict:
        return {"path": img.source, "key": img.key, "kind": img.kind, "shape": list(img.shape),
                "origin": None if img.origin is None else list(img.origin)}

    units = {"mae": "same as the image (amplitude: object units; phase: rad)", "mse": "squared",
             "psnr": "dB, peak = reference range", "ssim": "1", "frc50": "cycles/pixel",
             "frc17": "cycles/pixel", "shift": "pixels", "phase_offset": "rad",
             "phase_ramp_dy/dx": "rad/pixel", "region": "reconstruction pixels, end exclusive"}
    return _json_value({"reconstruction": describe(ev.recon), "reference": describe(ev.reference),
                        "metrics": ev.metrics, "alignment": ev.alignment, "region": ev.region,
                        "options": ev.options, "warnings": list(ev.warnings),
                        "units": units})


def write_outputs(ev: Evaluation, output_dir) -> dict[str, Path]:
    """Write metrics.json, metrics.csv, comparison.png and frc.png atomically into output_dir."""
    from ptycho.atomic import atomic_write_json, atomic_write_text
    from ptycho.evaluation_plots import save_comparison_png, save_frc_png

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": atomic_write_json(out / OUTPUT_FILES["json"], _as_json(ev))}
    row = flat_row(ev)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(row), lineterminator="\n")
    writer.writeheader()
    writer.writerow({k: "" if v is None else (repr(v) if isinstance(v, float) else v)
                     for k, v in row.items()})
    files["csv"] = atomic_write_text(out / OUTPUT_FILES["csv"], buf.getvalue())
    names = f"{Path(ev.recon.source).name} vs {Path(ev.reference.source).name}"
    files["comparison"] = save_comparison_png(ev.images, ev.metrics, ev.alignment,
                                              out / OUTPUT_FILES["comparison"], names)
    files["frc"] = save_frc_png(ev.frc, ev.metrics, out / OUTPUT_FILES["frc"], names)
    return files


def format_table(ev: Evaluation) -> str:
    """A short plain-text table of the metrics and the alignment applied."""
    lines = [f"{'':10s} {'MAE':>10s} {'PSNR[dB]':>9s} {'SSIM':>7s} {'FRC0.5':>7s} {'FRC1/7':>7s}"
             "  (FRC in cycles/px)"]
    for label, p in (("amplitude", "amp"), ("phase", "phase")):
        m = ev.metrics
        lines.append(f"{label:10s} {m[p + '_mae']:10.4g} {m[p + '_psnr']:9.2f} "
                     f"{m[p + '_ssim']:7.4f} {m[p + '_frc50']:7.4f} {m[p + '_frc17']:7.4f}")
    a = ev.alignment
    shift = ("none" if a["shift_dy"] is None
             else f"({a['shift_dy']:+.3f}, {a['shift_dx']:+.3f}) px")
    lines.append(f"alignment: shift (dy, dx) {shift}, phase offset {a['phase_offset']:+.4f} rad, "
                 f"amplitude scale {a['amplitude_scale']:.4g}")
    reg = ev.region
    lines.append(f"region: rows {reg['row0']}:{reg['row1']}, cols {reg['col0']}:{reg['col1']} "
                 f"({reg['n_pixels']} px) from {reg['mask_source']}")
    return "\n".join(lines)


def _add(parser, name: str, **kwargs):
    """Add ``--name`` and its ``--name_with_underscores`` spelling."""
    flags = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    return parser.add_argument(*flags, **kwargs)


def _add_switch(parser, name: str, default: bool, help_on: str, help_off: str) -> None:
    """``--name`` / ``--no-name`` (and the underscore spellings) setting one boolean."""
    dest = name.replace("-", "_")
    _add(parser, name, dest=dest, action="store_true", default=default,
         help=help_on + (" (default)" if default else " (default: off)"))
    _add(parser, f"no-{name}", dest=dest, action="store_false",
         help=help_off + (" (default)" if not default else ""))


def build_parser() -> argparse.ArgumentParser:
    """The ``ptycho-evaluate`` parser; every dashed flag is also accepted as ``--a_b``."""
    p = argparse.ArgumentParser(
        prog="ptycho-evaluate",
        description="Compare a reconstruction with the ground truth (objectGuess of a data NPZ) "
                    "or with another reconstruction, on the scanned region, after aligning shift, "
                    "phase offset and amplitude scale. Writes metrics.json, metrics.csv, "
                    "comparison.png and frc.png.")
    p.add_argument("recon", metavar="RECON",
                   help="reconstruction .npz from either inference CLI (or its output directory)")
    _add(p, "reference", default=None, metavar="REF",
         help="data .npz with objectGuess (the test scan) or another reconstruction .npz; "
              "default: objectGuess stored in RECON itself")
    _add(p, "output-dir", required=True, metavar="DIR", help="directory for the outputs (created)")
    _add_switch(p, "align", True, "align shift, phase offset and amplitude scale",
                "compare the raw images, without any alignment")
    _add_switch(p, "shift", True, "register the sub-pixel shift (when aligning)",
                "skip shift registration; phase offset and scale are still aligned")
    _add_switch(p, "phase-ramp", False, "also remove a linear phase ramp",
                "remove only a constant phase offset")
    _add_switch(p, "crop-to-scan", False,
                "analyse the largest rectangle fully inside the scanned region, so SSIM and FRC "
                "see no unscanned pixel", "analyse the scanned region's bounding box")
    _add(p, "patch-size", type=int, default=None, metavar="PIXELS",
         help="side in pixels of the square each scan position covers, used only when RECON has "
              "no illuminated_mask, scanned_mask or weight (default: RECON's stitch_crop, else "
              "the data file's N)")
    _add(p, "max-shift", type=float, default=DEFAULT_MAX_SHIFT, metavar="PIXELS",
         help="search range of the shift registration, ± pixels on each axis "
              f"(default: {DEFAULT_MAX_SHIFT:g})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 on success, 2 on bad arguments or input."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        ev = evaluate_files(args.recon, args.reference, align=args.align, shift=args.shift,
                            phase_ramp=args.phase_ramp, crop_to_scan=args.crop_to_scan,
                            patch_size=args.patch_size, max_shift=args.max_shift)
        files = write_outputs(ev, args.output_dir)
    except (ValueError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    for message in ev.warnings:
        print(f"{parser.prog}: warning: {message}", file=sys.stderr)
    print(f"{ev.recon.source} vs {ev.reference.source} ({ev.reference.kind})")
    print(format_table(ev))
    print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
