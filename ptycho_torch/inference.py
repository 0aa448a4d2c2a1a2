"""``python -m ptycho_torch.inference``: reconstruct a scan with a trained PyTorch model bundle.

Steps: load and verify the bundle (``ptycho.bundle.load_bundle``; a bundle without a valid
intensity scale is refused), rebuild the model and load its state dict with
``torch.load(weights_only=True)``; group the test data exactly like training (gridsize, K,
seed; ``--n_groups`` default all) and normalise it by its own normalisation factor; predict
every group in batches of ``--batch_size`` (the last partial batch included) and stitch each
batch at once into a ``ptycho.stitch.Stitcher`` (memory bounded by the canvas).

Writes into ``--output_dir``: ``reconstruction.npz`` (``object`` complex64 (H, W),
``amplitude``, ``phase``, ``weight``, ``scanned_mask``, ``illuminated_mask`` (the scanned pixels
the probe lit; the region of the metrics), ``origin`` (y0, x0), the canvas coordinates
``canvas_y`` (H,) / ``canvas_x`` (W,) in object pixels, ``scan_index`` (the patterns
reconstructed), ``scan_positions`` (their (y, x) in canvas pixels), ``stitch_crop``,
``refine_steps``, ``com_phase_steps`` and ``projection_steps``; when the centre-of-mass phase
correction (``--com-phase-steps``) or refinement ran, ``object`` is the corrected / refined
object and ``network_object`` the network's; with ``--refine-probe``, ``refined_probe`` the
refined probe),
``reconstructed_amplitude.png`` and ``reconstructed_phase.png``, ``metrics.json``
(``ptycho.metrics.evaluate_reconstruction``) when the data hold an ``objectGuess``,
``phase_correction.json`` when corrected, ``refinement.json`` and ``refinement.png`` when
refined, ``timing.json`` (load / predict / stitch / correct / refine / total seconds, patterns
per second, peak RSS) and, with ``--log-patch-stats``, ``torch_patch_stats.json`` and
``torch_patch_grid.png`` of the predicted patches.

Model settings come from the bundle, except ``--projection_steps`` (no weights); the model path
may be the bundle directory or the training output directory holding ``model/``. Exit status 0
on success, 2 for invalid input.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import numpy as np

from ptycho.bundle import resolve_bundle_dir
from ptycho.cli_common import (add_execution_arguments, add_inference_arguments,
                               namespace_to_overrides, print_inert_settings)
from ptycho.inference_core import InferenceResult, prepare_scan, stream_and_write

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


def resolve_inference_payload(cli_overrides: dict, config_path: Optional[str] = None):
    """Flags + config file -> ``(InferencePayload, LoadedBundle)`` of a PyTorch bundle
    (:func:`ptycho.payload.resolve_inference_payload`: precedence defaults < the bundle's model
    section, K and grouping seed < config file < flags; other model settings are refused)."""
    from ptycho.payload import resolve_inference_payload as resolve

    return resolve(cli_overrides, config_path, backend="torch")


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


def run_inference(payload, bundle, t_start: Optional[float] = None) -> InferenceResult:
    """Predict, stitch and write every output of one inference run (see module doc)."""
    import torch

    from ptycho_torch.config_bridge import resolve_accelerator

    t0 = time.perf_counter() if t_start is None else t_start
    cfg = payload.config
    device = resolve_accelerator(cfg.execution.accelerator)
    torch.manual_seed(cfg.execution.seed)
    model = load_model(bundle, device)
    if cfg.execution.precision == "64":
        model = model.double()
    scan = prepare_scan(cfg)
    t_load = time.perf_counter() - t0
    print(f"ptycho_torch.inference: bundle {payload.bundle_dir}: intensity scale "
          f"{bundle.intensity_scale:.6g} (trained), training normalisation factor "
          f"{bundle.normalization_factor:.6g}; test data {scan.data.source}: {scan.data.M} "
          f"patterns, {len(scan.grouped)} groups of {scan.grouped.C}, normalisation factor "
          f"{scan.normalization_factor:.6g}; device {device}", flush=True)

    dtype = torch.float64 if cfg.execution.precision == "64" else torch.float32
    mixed = _MIXED.get(cfg.execution.precision)

    @torch.inference_mode()
    def predict(X: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        X_t = torch.from_numpy(np.array(X)).to(device=device, dtype=dtype)
        off_t = torch.from_numpy(np.array(offsets)).to(device=device, dtype=dtype)
        with torch.autocast(device_type=device, dtype=getattr(torch, mixed or "float32"),
                            enabled=mixed is not None):
            obj = model(X_t, off_t).obj
        return obj.to(torch.complex64).cpu().numpy()

    def device_facts() -> dict:
        facts = {"device": device}
        if device == "cuda":
            facts["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        return facts

    return stream_and_write(scan, predict, cfg, prefix="torch", title="PyTorch reconstruction",
                            t_start=t0, t_load=t_load, intensity_scale=bundle.intensity_scale,
                            timing_extra=device_facts,
                            log=lambda msg: print(f"ptycho_torch.inference: {msg}", flush=True))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        payload, bundle = resolve_inference_payload(namespace_to_overrides(args), args.config)
        print_inert_settings(payload.config.execution, "torch", "ptycho_torch.inference")
        result = run_inference(payload, bundle, t_start=t0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary_line("ptycho_torch.inference", payload.config.inference.output_dir),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
