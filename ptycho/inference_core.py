"""Backend-neutral half of an inference run: read and group the scan, stream predictions into the
stitcher, and write every output file.

A backend supplies only ``predict(X, offsets) -> object patches``; both inference CLIs therefore
group, stitch, time and write exactly alike:

* ``X`` is ``(B, C, N, N)`` float32 normalised amplitudes, ``offsets`` ``(B, C, 2)`` float32
  ``(dy, dx)`` group-relative positions in object pixels;
* the returned patches are ``(B, C, N, N)`` complex64 (channels first, whatever the backend
  uses internally).

Memory does not grow with the number of patterns: the scan is validated chunk by chunk
(``ptycho.data.stream.open_scan``), each batch's patterns are read from the file when it is
predicted and stitched at once, so only O(M) positions, one batch and the canvas are resident.
Overlapping patches are averaged with the probe-intensity weight of ``inference.stitch_weighting``
(``ptycho.stitch.probe_weight`` of the scan's probe), and ``metrics.json`` is computed on the
illuminated region (``ptycho.illumination``), which ``reconstruction.npz`` also stores as
``illuminated_mask``.

With ``inference.com_phase_steps`` > 0 the slow phase of the stitched object is first corrected
from the centres of mass of all the scan's patterns (``ptycho.com_phase``; amplitude unchanged);
``phase_correction.json`` records the fit and the metrics before and after. With
``inference.refine_steps`` > 0 the object is then refined against all the scan's
patterns (``ptycho.refine``; with ``inference.refine_probe`` the probe too, kept as
``refined_probe``); the refined object becomes the result and ``refinement.json`` records the
fit and the metrics of both. Whenever either step ran, the network's stitched object is kept as
``network_object``.

Outputs in ``inference.output_dir``: ``reconstruction.npz``, ``reconstructed_amplitude.png``,
``reconstructed_phase.png``, ``timing.json``, ``metrics.json`` (when the scan has
``objectGuess``), ``phase_correction.json`` (when corrected), ``refinement.json`` and
``refinement.png`` (when refined) and, with
``log_patch_stats``, ``{prefix}_patch_stats.json`` / ``{prefix}_patch_grid.png``.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ptycho.atomic import atomic_save_npz, atomic_write_json
from ptycho.data.batches import StreamedGroups, prepare_streamed_groups
from ptycho.data.prepare import iter_grouped_batches
from ptycho.data.stream import StreamedScan, open_scan
from ptycho.illumination import illumination_mask
from ptycho.stitch import Stitcher, canvas_for_positions, probe_weight

__all__ = ["InferenceResult", "PreparedScan", "prepare_scan", "stream_and_write", "peak_rss_mb",
           "json_safe"]

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class InferenceResult:
    """What one inference run produced (the stitched object and where its outputs went)."""

    obj: np.ndarray
    scanned_mask: np.ndarray
    origin: tuple
    n_groups: int
    n_patterns: int          # predicted patches: groups x patterns per group
    metrics: Optional[dict]
    timing: dict
    output_files: dict = field(default_factory=dict)
    n_scan_patterns: int = 0  # distinct scan patterns reconstructed

    def summary_line(self, prog: str, output_dir) -> str:
        """The one-line report of an inference CLI: counts, speed, outputs and, with ground
        truth, the SSIMs."""
        per_group = self.n_patterns // max(self.n_groups, 1)
        unit = "patterns" if per_group == 1 else "patches"
        rate = self.timing.get("patterns_per_s")
        speed = f"{rate:.1f} {unit}/s" if rate is not None else "no prediction time"
        if per_group == 1:
            counts = f"{self.n_patterns} patterns, {speed}"
        else:
            counts = (f"{self.n_scan_patterns} scan patterns in {self.n_groups} groups of "
                      f"{per_group} ({self.n_patterns} patches predicted, {speed})")
        msg = f"{prog}: {counts}; outputs in {output_dir}"
        if self.metrics is not None:
            msg += (f"; amplitude SSIM {self.metrics['amp_ssim']:.3f}, phase SSIM "
                    f"{self.metrics['phase_ssim']:.3f}")
        return msg


@dataclass
class PreparedScan:
    """The test scan grouped like training, with an empty stitcher sized for it.

    ``data`` keeps the patterns on disk; :func:`stream_and_write` closes it (or call
    :meth:`close`).
    """

    data: StreamedScan
    grouped: StreamedGroups
    normalization_factor: float
    stitcher: Stitcher
    crop: int

    def close(self) -> None:
        """Close the scan's pattern file (removing any temporary copy)."""
        self.data.close()


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    On Linux ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` there also holds the peak of the
    parent that started this program (``vfork``/``posix_spawn`` carry it over ``exec``). Else
    ``ru_maxrss`` (kB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def json_safe(value: Any) -> Any:
    """Metrics with non-finite floats as strings (the PSNR of identical images is inf)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def prepare_scan(config) -> PreparedScan:
    """Read ``config.inference.test_data``, check N, normalise by the scan's own factor and group.

    The canvas is the ``objectGuess`` frame when the file has one (so metrics compare pixel for
    pixel), else the bounding box of the scan positions ± N/2.
    """
    m, inf = config.model, config.inference
    data = open_scan(inf.test_data)
    try:
        if data.N != m.N:
            raise ValueError(f"{data.source}: patterns are {data.N}x{data.N} but the model was "
                             f"trained with N={m.N}")
        factor = data.normalization_factor
        grouped = prepare_streamed_groups(data, m.gridsize, factor, n_groups=config.data.n_groups,
                                          K=config.data.K, seed=config.data.seed)
        if data.object is not None:
            canvas_shape, origin = tuple(data.object.shape), (0, 0)
        else:
            canvas_shape, origin = canvas_for_positions(grouped.positions.reshape(-1, 2), m.N)
        crop = config.resolved_stitch_crop
        weight = probe_weight(data.probe) if inf.stitch_weighting == "probe" else None
        stitcher = Stitcher(canvas_shape, m.N, crop=crop, interpolation=m.interpolation,
                            origin=origin, pixel_weight=weight)
    except BaseException:
        data.close()
        raise
    return PreparedScan(data=data, grouped=grouped, normalization_factor=float(factor),
                        stitcher=stitcher, crop=int(crop))


def stream_and_write(scan: PreparedScan, predict: Predictor, config, *, prefix: str, title: str,
                     t_start: float, t_load: float, intensity_scale: float,
                     timing_extra: Optional[Callable[[], dict]] = None,
                     log: Callable[[str], None] = print) -> InferenceResult:
    """Predict every group batch by batch (the last partial batch included), stitch as it goes,
    optionally refine the stitched object (``inference.refine_steps``, with the model's
    ``intensity_scale``), and write all outputs atomically. Each batch's patterns are read from
    the scan file just before it is predicted; the file is closed once every batch is done (and
    the refinement has read its patterns). ``prefix`` is ``"tf"`` or ``"torch"``;
    ``timing_extra`` returns backend facts (device, peak accelerator memory) read after the
    predictions; ``log`` receives the refinement's progress lines."""
    from ptycho.plotting import save_complex_image_png

    inf = config.inference
    out = Path(inf.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    grouped, stitcher, data = scan.grouped, scan.stitcher, scan.data
    N, C = config.model.N, grouped.C
    patch_logger = None
    if inf.log_patch_stats:
        from ptycho.patch_stats import PatchStatsLogger

        patch_logger = PatchStatsLogger(out, prefix, config.model.gridsize,
                                        limit=inf.patch_stats_limit)
    t_predict = t_stitch = 0.0
    try:
        for batch_idx, sl in enumerate(iter_grouped_batches(grouped, inf.batch_size)):
            X = grouped.inputs(sl)
            ts = time.perf_counter()
            obj = np.asarray(predict(X, grouped.offsets[sl]), dtype=np.complex64)
            t_predict += time.perf_counter() - ts
            ts = time.perf_counter()
            stitcher.add(obj.reshape(-1, N, N), grouped.positions[sl].reshape(-1, 2))
            if patch_logger is not None:
                patch_logger.log(obj, "inference", batch_idx)
            t_stitch += time.perf_counter() - ts
            del X, obj
        used = np.unique(grouped.nn_indices).astype(np.int64)      # scan patterns reconstructed
        needed = inf.refine_steps > 0 or inf.com_phase_steps > 0
        scan_patterns = data.patterns.gather(used) if needed else None
    finally:
        scan.close()
    n_patterns = len(grouped) * C
    if stitcher.n_patches != n_patterns:
        raise RuntimeError(f"stitched {stitcher.n_patches} patches but {n_patterns} were predicted")

    ts = time.perf_counter()
    result = stitcher.result()
    H, W = result.obj.shape
    origin = np.asarray(result.origin, np.float64)
    positions = data.positions[used] - origin
    illuminated = result.scanned_mask & illumination_mask(data.probe, positions, (H, W))
    t_stitch += time.perf_counter() - ts

    final, network_obj, correction, refinement = result.obj, None, None, None
    if inf.com_phase_steps > 0:
        correction = _correct_phase(final, scan_patterns, positions, data.probe, inf, log)
        final, network_obj = correction.obj, result.obj
    t_refine = 0.0
    if inf.refine_steps > 0:
        ts = time.perf_counter()
        refinement = _refine(final, scan_patterns, positions, data.probe,
                             intensity_scale, inf, log)
        final, network_obj = refinement.obj, result.obj
        t_refine = time.perf_counter() - ts
    del scan_patterns

    ts = time.perf_counter()
    files: dict[str, Any] = {}
    arrays = {
        "object": final, "amplitude": np.abs(final).astype(np.float32),
        "phase": np.angle(final).astype(np.float32), "weight": result.weight,
        "scanned_mask": result.scanned_mask, "illuminated_mask": illuminated,
        "origin": np.asarray(result.origin, np.int64),
        "canvas_y": result.origin[0] + np.arange(H, dtype=np.float64),
        "canvas_x": result.origin[1] + np.arange(W, dtype=np.float64),
        "scan_index": used, "scan_positions": positions,
        "stitch_crop": np.int64(scan.crop), "refine_steps": np.int64(inf.refine_steps),
        "com_phase_steps": np.int64(inf.com_phase_steps),
        "projection_steps": np.int64(config.model.projection_steps)}
    if network_obj is not None:
        arrays["network_object"] = network_obj
    if refinement is not None and inf.refine_probe:
        arrays["refined_probe"] = refinement.probe
    files["reconstruction"] = atomic_save_npz(out / "reconstruction.npz", arrays)
    kind = (", slow phase from centres of mass" if correction is not None else "") + \
        (f", refined {inf.refine_steps} steps" if refinement is not None else "")
    files["amplitude_png"], files["phase_png"] = save_complex_image_png(
        final, out / "reconstructed_amplitude.png", out / "reconstructed_phase.png",
        title=f"{title}{kind} ({Path(inf.test_data).name})")
    t_stitch += time.perf_counter() - ts

    metrics = network_metrics = corrected_metrics = None
    if data.object is not None:
        from ptycho.metrics import evaluate_reconstruction

        metrics = evaluate_reconstruction(final, data.object, mask=illuminated)
        files["metrics"] = atomic_write_json(out / "metrics.json", json_safe(metrics))
        if network_obj is not None:
            network_metrics = evaluate_reconstruction(network_obj, data.object, mask=illuminated)
        if correction is not None:
            corrected_metrics = (metrics if refinement is None else evaluate_reconstruction(
                correction.obj, data.object, mask=illuminated))
    elif (out / "metrics.json").exists():
        (out / "metrics.json").unlink()
        log(f"removed {out / 'metrics.json'}: it scored an earlier reconstruction, and "
            f"{data.source} has no objectGuess to score this one")
    if correction is None:
        (out / "phase_correction.json").unlink(missing_ok=True)   # not left from an earlier run
    else:
        files["phase_correction"] = atomic_write_json(out / "phase_correction.json", json_safe({
            "steps": correction.steps, "smoothing": correction.smoothing,
            "n_patterns": int(len(used)), "residual_rms_rad_per_px": correction.residual_rms,
            "correction_range_rad": correction.correction_range,
            "solver_iterations": correction.solver_iterations,
            "seconds": correction.seconds, "metrics": corrected_metrics,
            "network_metrics": network_metrics}))
    if refinement is None:
        for stale in ("refinement.json", "refinement.png"):   # not left over from a refined run
            (out / stale).unlink(missing_ok=True)
    else:
        files["refinement"] = atomic_write_json(out / "refinement.json", json_safe({
            "steps": refinement.steps, "learning_rate": inf.refine_learning_rate,
            "refine_probe": inf.refine_probe,
            "n_patterns": int(len(used)), "amplitude_factor": refinement.amplitude_factor,
            "nll_per_pattern_start": refinement.nll_start,
            "nll_per_pattern_end": refinement.nll_end, "history": refinement.history,
            "seconds": t_refine, "metrics": metrics, "network_metrics": network_metrics}))
        if any(h["nll"] > refinement.nll_end for h in refinement.history):
            from ptycho.plotting import save_refinement_png

            files["refinement_png"] = save_refinement_png(
                refinement.history, out / "refinement.png",
                title=f"{title}: refinement against {len(used)} patterns")
    if patch_logger is not None and patch_logger.entries:
        written = patch_logger.write()
        files["patch_stats"], files["patch_grid"] = Path(written["json"]), Path(written["png"])
    timing = {"load_s": t_load, "predict_s": t_predict, "stitch_s": t_stitch,
              "com_phase_s": correction.seconds if correction is not None else 0.0,
              "refine_s": t_refine, "total_s": time.perf_counter() - t_start,
              "n_groups": len(grouped), "n_patterns": n_patterns,
              "n_scan_patterns": int(len(used)),
              "patterns_per_s": n_patterns / t_predict if t_predict > 0 else None,
              "batch_size": inf.batch_size, "peak_rss_mb": peak_rss_mb()}
    timing.update(timing_extra() if timing_extra is not None else {})
    files["timing"] = atomic_write_json(out / "timing.json", timing)
    return InferenceResult(obj=final, scanned_mask=result.scanned_mask, origin=result.origin,
                           n_groups=len(grouped), n_patterns=n_patterns, metrics=metrics,
                           timing=timing, output_files=files, n_scan_patterns=int(len(used)))


def _correct_phase(obj: np.ndarray, patterns: np.ndarray, positions: np.ndarray,
                   probe: np.ndarray, inf, log: Callable[[str], None]):
    """``ptycho.com_phase.com_phase_correction`` with a progress line per step."""
    from ptycho.com_phase import com_phase_correction

    steps = inf.com_phase_steps
    log(f"correcting the slow phase from the centres of mass of {len(patterns)} patterns, "
        f"{steps} steps (smoothing {inf.com_phase_smoothing:g})")

    def progress(step: int, residual: float) -> None:
        log(f"phase correction step {step}/{steps}, centre-of-mass mismatch "
            f"{residual:.4g} rad/px")

    res = com_phase_correction(obj, patterns, positions, probe, steps=steps,
                               smoothing=inf.com_phase_smoothing, progress=progress)
    log(f"phase correction: mismatch {res.residual_rms[0]:.4g} -> {res.residual_rms[-1]:.4g} "
        f"rad/px in {res.seconds:.1f} s")
    return res


def _refine(obj: np.ndarray, patterns: np.ndarray, positions: np.ndarray, probe: np.ndarray,
            intensity_scale: float, inf, log: Callable[[str], None]):
    """``ptycho.refine.refine_object`` with a progress line about every tenth of the steps."""
    from ptycho.refine import refine_object

    steps = inf.refine_steps
    every = max(1, steps // 10)
    what = "object and probe" if inf.refine_probe else "object"
    log(f"refining the stitched {what} against {len(patterns)} patterns, {steps} steps "
        f"(learning rate {inf.refine_learning_rate:g})")

    def progress(step: int, nll: float) -> None:
        if step % every == 0 or step == steps:
            log(f"refine step {step}/{steps}, NLL per pattern {nll:.6g}")

    res = refine_object(obj, patterns, positions, probe, intensity_scale, steps=steps,
                        learning_rate=inf.refine_learning_rate, refine_probe=inf.refine_probe,
                        record_every=every, progress=progress)
    log(f"refinement: NLL per pattern {res.nll_start:.6g} -> {res.nll_end:.6g}")
    return res
