"""``python -m ptycho_torch.inference``: reconstruct a scan with a trained PyTorch model bundle.

Steps: load and verify the bundle (``ptycho.bundle.load_bundle``; a bundle without a valid
intensity scale is refused), rebuild the model and load its state dict with
``torch.load(weights_only=True)``; group the test data exactly like training (gridsize, K,
seed; ``--n_groups`` default all) and normalise it by its own normalisation factor; predict
every group in batches of ``--batch_size`` (the last partial batch included) and stitch each
batch at once into a ``ptycho.stitch.Stitcher`` (memory bounded by the canvas).

Writes into ``--output_dir``: ``reconstruction.npz`` (``object`` complex64 (H, W),
``amplitude``, ``phase``, ``weight``, ``scanned_mask``, ``origin`` (y0, x0), the canvas
coordinates ``canvas_y`` (H,) / ``canvas_x`` (W,) in object pixels, ``scan_index`` (the patterns
reconstructed), ``scan_positions`` (their (y, x) in canvas pixels) and ``stitch_crop``),
``reconstructed_amplitude.png`` and ``reconstructed_phase.png``, ``metrics.json`` (``ptycho.metrics.evaluate_reconstruction``) when the data hold
an ``objectGuess``, ``timing.json`` (load / predict / stitch / total seconds, patterns per
second, peak RSS) and, with ``--log-patch-stats``, ``torch_patch_stats.json`` and
``torch_patch_grid.png`` of the predicted patches.

Model settings come from the bundle; the model path may be the bundle directory or the training
output directory holding ``model/``. Exit status 0 on success, 2 for invalid input.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ptycho.cli_common import (add_execution_arguments, add_inference_arguments,
                               namespace_to_overrides)

__all__ = ["build_parser", "main", "resolve_inference_payload", "resolve_bundle_dir",
           "load_model", "run_inference", "InferenceResult"]

_MIXED = {"16-mixed": "float16", "bf16-mixed": "bfloat16"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ptycho_torch.inference``."""
    parser = argparse.ArgumentParser(
        prog="python -m ptycho_torch.inference",
        description="Reconstruct a ptychographic scan with a trained PyTorch model bundle: "
                    "stitched object (NPZ, PNGs), metrics against objectGuess, timing.")
    add_inference_arguments(parser)
    add_execution_arguments(parser)
    return parser


def resolve_bundle_dir(model_path: str | Path) -> Path:
    """The bundle directory: ``model_path`` itself, or ``model_path/model`` for a training
    output directory. Raises ``BundleError`` when neither holds a manifest."""
    from ptycho.bundle import MANIFEST_NAME, BundleError

    p = Path(model_path)
    if (p / MANIFEST_NAME).is_file():
        return p
    if (p / "model" / MANIFEST_NAME).is_file():
        return p / "model"
    raise BundleError(f"{p}: no {MANIFEST_NAME} here or in {p / 'model'}; --model_path must be a "
                      "model bundle directory (or a training output directory)")


def resolve_inference_payload(cli_overrides: dict, config_path: Optional[str] = None):
    """Flags + config file → ``(InferencePayload, LoadedBundle)``.

    Precedence: defaults < the bundle's model section (and its K and grouping seed) < config file
    < flags. Model settings other than the bundle's are refused (the weights fix them).
    """
    from ptycho.bundle import load_bundle
    from ptycho.config import ConfigError, DataConfig, PtychoConfig
    from ptycho.config_bridge import resolve_config
    from ptycho.payload import InferencePayload

    first, _ = resolve_config(cli_overrides, yaml_path=config_path, context="inference")
    if first.inference.model_path is None:
        raise ConfigError("inference.model_path: required; give --model_path")
    if first.inference.test_data is None:
        raise ConfigError("inference.test_data: required; give --test_data")
    bundle = load_bundle(resolve_bundle_dir(first.inference.model_path))
    if bundle.backend != "torch":
        raise ConfigError(f"{bundle.weights_path.parent}: a {bundle.backend!r} bundle cannot be "
                          "loaded by the PyTorch backend; use python -m ptycho.inference")
    trained = bundle.config
    base = PtychoConfig(model=trained.model, data=DataConfig(K=trained.data.K,
                                                             seed=trained.data.seed))
    config, overrides = resolve_config(cli_overrides, yaml_path=config_path, base=base,
                                       context="inference")
    if config.model != trained.model:
        raise ConfigError(f"model settings are fixed by the bundle ({trained.model}); the "
                          f"config asks for {config.model}")
    payload = InferencePayload(config=config, bundle_dir=str(bundle.weights_path.parent),
                               overrides=overrides)
    return payload, bundle


def load_model(bundle, device: str = "cpu"):
    """Rebuild the ``PtychoPINN`` of a loaded bundle and load its weights (weights_only)."""
    from ptycho.bundle import BundleError
    from ptycho_torch.model import PtychoPINN
    from ptycho_torch.workflows.components import load_state_dict

    model = PtychoPINN(bundle.config.model, bundle.probe, intensity_scale=bundle.intensity_scale,
                       normalization_factor=bundle.normalization_factor)
    state = load_state_dict(bundle.weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{bundle.weights_path}: weights do not fit the bundle's model "
                          f"config: {exc}") from None
    stored = model.intensity_scale_value()
    if not np.isclose(stored, bundle.intensity_scale, rtol=1e-5):
        raise BundleError(f"{bundle.weights_path}: intensity scale in the weights ({stored}) "
                          f"differs from the manifest ({bundle.intensity_scale})")
    return model.to(device).eval()


@dataclass
class InferenceResult:
    """What ``run_inference`` produced."""

    obj: np.ndarray
    scanned_mask: np.ndarray
    origin: tuple
    n_groups: int
    n_patterns: int
    metrics: Optional[dict]
    timing: dict
    output_files: dict = field(default_factory=dict)


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def run_inference(payload, bundle, t_start: Optional[float] = None) -> InferenceResult:
    """Predict, stitch and write every output of one inference run (see module doc)."""
    import torch

    from ptycho.atomic import atomic_save_npz, atomic_write_json
    from ptycho.data.contract import load_npz
    from ptycho.data.prepare import iter_grouped_batches, prepare_grouped_arrays
    from ptycho.physics import normalization_factor
    from ptycho.plotting import save_complex_image_png
    from ptycho.stitch import Stitcher, canvas_for_positions
    from ptycho_torch.config_bridge import resolve_accelerator

    t0 = time.perf_counter() if t_start is None else t_start
    cfg = payload.config
    inf = cfg.inference
    out = Path(inf.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_accelerator(cfg.execution.accelerator)
    torch.manual_seed(cfg.execution.seed)
    model = load_model(bundle, device)
    if cfg.execution.precision == "64":
        model = model.double()
    data = load_npz(inf.test_data)
    if data.N != cfg.model.N:
        raise ValueError(f"{data.source}: patterns are {data.N}x{data.N} but the model was "
                         f"trained with N={cfg.model.N}")
    factor = normalization_factor(data.diffraction)
    grouped = prepare_grouped_arrays(data, cfg.model.gridsize, factor, n_groups=cfg.data.n_groups,
                                     K=cfg.data.K, seed=cfg.data.seed,
                                     interpolation=cfg.model.interpolation)
    N, C = cfg.model.N, grouped.C
    if data.object is not None:
        canvas_shape, origin = tuple(data.object.shape), (0, 0)
    else:
        canvas_shape, origin = canvas_for_positions(grouped.positions.reshape(-1, 2), N)
    stitcher = Stitcher(canvas_shape, N, crop=cfg.resolved_stitch_crop,
                        interpolation=cfg.model.interpolation, origin=origin)
    patch_logger = None
    if inf.log_patch_stats:
        from ptycho.patch_stats import PatchStatsLogger

        patch_logger = PatchStatsLogger(out, "torch", cfg.model.gridsize,
                                        limit=inf.patch_stats_limit)
    t_load = time.perf_counter() - t0
    print(f"ptycho_torch.inference: bundle {payload.bundle_dir}: intensity scale "
          f"{bundle.intensity_scale:.6g} (trained), training normalisation factor "
          f"{bundle.normalization_factor:.6g}; test data {data.source}: {data.M} patterns, "
          f"{len(grouped)} groups of {C}, normalisation factor {factor:.6g}; device {device}",
          flush=True)

    dtype = torch.float64 if cfg.execution.precision == "64" else torch.float32
    mixed = _MIXED.get(cfg.execution.precision)
    t_predict = t_stitch = 0.0
    with torch.inference_mode():
        for batch_idx, sl in enumerate(iter_grouped_batches(grouped, inf.batch_size)):
            ts = time.perf_counter()
            X = torch.from_numpy(np.array(grouped.X[sl])).to(device=device, dtype=dtype)
            offsets = torch.from_numpy(np.array(grouped.offsets[sl])).to(device=device,
                                                                         dtype=dtype)
            with torch.autocast(device_type=device, dtype=getattr(torch, mixed or "float32"),
                                enabled=mixed is not None):
                obj = model(X, offsets).obj
            obj_np = obj.to(torch.complex64).cpu().numpy()
            t_predict += time.perf_counter() - ts
            ts = time.perf_counter()
            stitcher.add(obj_np.reshape(-1, N, N), grouped.positions[sl].reshape(-1, 2))
            if patch_logger is not None:
                patch_logger.log(obj_np, "inference", batch_idx)
            t_stitch += time.perf_counter() - ts
    if stitcher.n_patches != len(grouped) * C:
        raise RuntimeError(f"stitched {stitcher.n_patches} patches but {len(grouped) * C} were "
                           "predicted")
    ts = time.perf_counter()
    result = stitcher.result()
    H, W = result.obj.shape
    used = np.unique(grouped.nn_indices).astype(np.int64)  # scan patterns reconstructed
    files: dict[str, Any] = {}
    files["reconstruction"] = atomic_save_npz(out / "reconstruction.npz", {
        "object": result.obj, "amplitude": np.abs(result.obj).astype(np.float32),
        "phase": np.angle(result.obj).astype(np.float32), "weight": result.weight,
        "scanned_mask": result.scanned_mask, "origin": np.asarray(result.origin, np.int64),
        "canvas_y": result.origin[0] + np.arange(H, dtype=np.float64),
        "canvas_x": result.origin[1] + np.arange(W, dtype=np.float64),
        "scan_index": used,
        "scan_positions": data.positions[used] - np.asarray(result.origin, np.float64),
        "stitch_crop": np.int64(cfg.resolved_stitch_crop)})
    files["amplitude_png"], files["phase_png"] = save_complex_image_png(
        result.obj, out / "reconstructed_amplitude.png", out / "reconstructed_phase.png",
        title=f"PyTorch reconstruction ({Path(inf.test_data).name})")
    t_stitch += time.perf_counter() - ts
    metrics = None
    if data.object is not None:
        from ptycho.metrics import evaluate_reconstruction

        metrics = evaluate_reconstruction(result.obj, data.object, mask=result.scanned_mask)
        files["metrics"] = atomic_write_json(out / "metrics.json", _json_safe(metrics))
    if patch_logger is not None and patch_logger.entries:
        written = patch_logger.write()
        files["patch_stats"], files["patch_grid"] = Path(written["json"]), Path(written["png"])
    total = time.perf_counter() - t0
    n_patterns = len(grouped) * C
    timing = {"load_s": t_load, "predict_s": t_predict, "stitch_s": t_stitch, "total_s": total,
              "n_groups": len(grouped), "n_patterns": n_patterns,
              "patterns_per_s": n_patterns / t_predict if t_predict > 0 else None,
              "batch_size": inf.batch_size, "device": device, "peak_rss_mb": _peak_rss_mb()}
    if device == "cuda":
        timing["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    files["timing"] = atomic_write_json(out / "timing.json", timing)
    return InferenceResult(obj=result.obj, scanned_mask=result.scanned_mask, origin=result.origin,
                           n_groups=len(grouped), n_patterns=n_patterns, metrics=metrics,
                           timing=timing, output_files=files)


def _json_safe(value: Any) -> Any:
    """Metrics with non-finite floats as strings (PSNR of identical images is inf)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        payload, bundle = resolve_inference_payload(namespace_to_overrides(args), args.config)
        result = run_inference(payload, bundle, t_start=t0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    msg = (f"ptycho_torch.inference: {result.n_patterns} patterns in {result.n_groups} groups, "
           f"{result.timing['patterns_per_s']:.1f} patterns/s; outputs in "
           f"{payload.config.inference.output_dir}")
    if result.metrics is not None:
        msg += (f"; amplitude SSIM {result.metrics['amp_ssim']:.3f}, phase SSIM "
                f"{result.metrics['phase_ssim']:.3f}")
    print(msg, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
