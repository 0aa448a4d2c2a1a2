"""End-to-end demo on built-in simulated data: simulate → train → infer → stitch → evaluate.

Runs the same command-line entry points a user types (in process), so the demo exercises exactly
what the documentation describes. Output layout under ``--output-dir``::

    data/train.npz, data/test.npz (+ preview PNGs)   simulated scans of two regions of one object
    train/model/                                      model bundle; train/ also holds the loss curve
    inference/                                        reconstruction.npz, amplitude/phase PNGs,
                                                      metrics.json, timing.json, patch statistics,
                                                      refinement.json/.png (the fit; network-only
                                                      metrics too)
    evaluation/                                       metrics.json/csv, comparison and FRC PNGs

The network's stitched object is refined by ``--refine-steps`` physics steps against the test
patterns (``ptycho.refine``); with ``--com-phase-steps`` its slow phase is first corrected from
the patterns' centres of mass (``ptycho.com_phase``). The demo prints the metrics of each stage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from ptycho.architecture import DECODERS
from ptycho.cli_common import BooleanFlag

BACKENDS = ("pytorch", "tensorflow")
# Defaults chosen by the measurements in docs/quality.md (a few CPU minutes of training).
LEARNING_RATE = 1e-3
BATCH_SIZE = 16
EPOCHS = 30
FILTER_SCALE = 0.25
PROBE_BIG = True
INTERPOLATION = "fourier"
DECODER = "unet"
REFINE_STEPS = 100


def _checked(kind, ok, what: str):
    """An argparse ``type`` that parses ``kind`` and refuses values for which ``ok`` is false
    (and NaN or infinity)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_COUNT = _checked(int, lambda v: v >= 1, "an integer >= 1")
_POSITIVE = _checked(float, lambda v: v > 0, "a number > 0")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ptycho.demo",
        description="Simulate a scan, train a PINN on one region, reconstruct a held-out region and "
                    "evaluate it against the ground truth.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", default="demo_output",
                   help="folder for every output")
    p.add_argument("--backend", choices=BACKENDS, default="pytorch", help="training/inference backend")
    p.add_argument("--n-patterns", "--n_patterns", dest="n_patterns",
                   type=_COUNT, default=512,
                   help="diffraction patterns per region (train and test each)")
    p.add_argument("--epochs", type=_COUNT, default=EPOCHS,
                   help="training epochs")
    p.add_argument("--filter-scale", "--filter_scale", dest="filter_scale",
                   type=_POSITIVE,
                   default=FILTER_SCALE,
                   help="multiplier of the network's filter counts (1 = the reference network; "
                        "smaller trains faster on a CPU)")
    p.add_argument("--decoder", choices=DECODERS, default=DECODER,
                   help="network decoder: reference (DESIGN section 5) or unet (full resolution "
                        "with skip connections)")
    p.add_argument("--gridsize", type=_COUNT, default=1,
                   help="patterns per group side (1: single patterns; 2: groups of 4 coupled by "
                        "the overlap constraint)")
    p.add_argument("--nphotons", type=_POSITIVE, default=1e9,
                   help="photons per pattern")
    p.add_argument("--seed", type=int, default=1, help="random seed for simulation and training")
    p.add_argument("--learning-rate", "--learning_rate", dest="learning_rate",
                   type=_POSITIVE,
                   default=LEARNING_RATE, help="Adam learning rate")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size",
                   type=_COUNT, default=BATCH_SIZE,
                   help="groups per optimiser step")
    p.add_argument("--probe-big", "--probe_big", dest="probe_big",
                   action=BooleanFlag, default=PROBE_BIG,
                   help="predict the object outside the central N/2 x N/2 patch region too")
    p.add_argument("--interpolation", choices=("bilinear", "fourier"), default=INTERPOLATION,
                   help="sub-pixel shift used by the overlap constraint")
    p.add_argument("--projection-steps", "--projection_steps", dest="projection_steps",
                   type=_checked(int, lambda v: v >= 0, "an integer >= 0"), default=0,
                   help="error-reduction projections of each group onto its measured patterns "
                        "inside the model, in training and inference (0: the network alone)")
    p.add_argument("--refine-steps", "--refine_steps", dest="refine_steps",
                   type=_checked(int, lambda v: v >= 0, "an integer >= 0"),
                   default=REFINE_STEPS,
                   help="physics refinement steps after stitching (0: the network's object "
                        "alone); both results are reported")
    p.add_argument("--com-phase-steps", "--com_phase_steps", dest="com_phase_steps",
                   type=_checked(int, lambda v: v >= 0, "an integer >= 0"), default=0,
                   help="after stitching, correct the slow phase from the test patterns' centres "
                        "of mass in this many steps (before any refinement; 0: none)")
    p.add_argument("--stitch-crop", "--stitch_crop", dest="stitch_crop",
                   type=_COUNT, default=None,
                   help="central crop of each patch used when stitching, in pixels (None: the "
                        "inference CLIs' default)")
    return p


def _backend_modules(backend: str):
    if backend == "pytorch":
        from ptycho_torch import inference, train
    else:
        from ptycho import inference, train
    return train, inference


def _step(title: str, func, argv: list[str]) -> float:
    print(f"\n=== {title} ===\n$ {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    rc = func(argv[3:])
    if rc != 0:
        raise SystemExit(f"demo step '{title}' failed with exit code {rc}")
    return time.perf_counter() - t0


def _metrics_table(values: dict) -> str:
    rows = ["| metric | amplitude | phase |", "|---|---|---|"]
    for name, label in (("ssim", "SSIM"), ("psnr", "PSNR [dB]"), ("mae", "MAE"),
                        ("frc50", "FRC 0.5 [cycles/px]")):
        rows.append(f"| {label} | {_fmt(values.get('amp_' + name))} "
                    f"| {_fmt(values.get('phase_' + name))} |")
    return "\n".join(rows)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{float(value):.4g}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from ptycho import evaluate, simulate

    train_mod, infer_mod = _backend_modules(args.backend)
    out = Path(args.output_dir)
    data_dir, train_dir = out / "data", out / "train"
    infer_dir, eval_dir = out / "inference", out / "evaluation"
    pkg = "ptycho_torch" if args.backend == "pytorch" else "ptycho"
    timings = {}
    timings["simulate"] = _step("simulate", simulate.main, [
        "python", "-m", "ptycho.simulate", "--output", str(data_dir), "--object", "lines",
        "--N", "64", "--n-patterns", str(args.n_patterns), "--nphotons", f"{args.nphotons:g}",
        "--split", "region", "--seed", str(args.seed)])
    timings["train"] = _step(f"train ({args.backend})", train_mod.main, [
        "python", "-m", f"{pkg}.train", "--train_data_file", str(data_dir / "train.npz"),
        "--output_dir", str(train_dir), "--gridsize", str(args.gridsize),
        "--max_epochs", str(args.epochs), "--seed", str(args.seed),
        "--learning_rate", f"{args.learning_rate:g}", "--batch_size", str(args.batch_size),
        "--probe_big" if args.probe_big else "--no-probe_big",
        "--interpolation", args.interpolation, "--filter_scale", f"{args.filter_scale:g}",
        "--decoder", args.decoder, "--projection_steps", str(args.projection_steps),
        "--log-patch-stats", "--patch-stats-limit", "2"])
    timings["inference"] = _step(f"infer and stitch ({args.backend})", infer_mod.main, [
        "python", "-m", f"{pkg}.inference", "--model_path", str(train_dir / "model"),
        "--test_data", str(data_dir / "test.npz"), "--output_dir", str(infer_dir),
        *(["--stitch_crop", str(args.stitch_crop)] if args.stitch_crop else []),
        "--com-phase-steps", str(args.com_phase_steps),
        "--refine-steps", str(args.refine_steps),
        "--log-patch-stats", "--patch-stats-limit", "2"])
    timings["evaluate"] = _step("evaluate", evaluate.main, [
        "python", "-m", "ptycho.evaluate", str(infer_dir / "reconstruction.npz"),
        "--reference", str(data_dir / "test.npz"), "--output_dir", str(eval_dir)])

    metrics = json.loads((eval_dir / "metrics.json").read_text())
    print("\n=== results ===")
    print(f"backend: {args.backend}; held-out test region, {args.n_patterns} patterns, "
          f"{args.nphotons:g} photons/pattern, {args.epochs} epochs, gridsize {args.gridsize}, "
          f"filter scale {args.filter_scale:g}, {args.decoder} decoder, "
          f"{args.projection_steps} projection steps, "
          f"learning rate {args.learning_rate:g}, batch {args.batch_size}")
    refinement, correction = infer_dir / "refinement.json", infer_dir / "phase_correction.json"
    stages = [(path, f"after {{steps}} {what} ({{seconds:.1f}} s):") for path, what, on in (
        (correction, "centre-of-mass phase-correction steps", args.com_phase_steps > 0),
        (refinement, "refinement steps against the test patterns", args.refine_steps > 0)) if on]
    for k, (path, heading) in enumerate(stages):
        info = json.loads(path.read_text())
        if k == 0:
            print("network alone (stitched patches):")
            print(_metrics_table(info["network_metrics"]))
        print(heading.format(steps=info["steps"], seconds=info["seconds"]))
        if k < len(stages) - 1:             # the last stage's metrics are the evaluation's
            print(_metrics_table(info["metrics"]))
    print(_metrics_table(metrics["metrics"]))
    print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"outputs: {out.resolve()}")
    for path in (data_dir / "train_preview.png", train_dir / "loss_curve.png",
                 infer_dir / "reconstruction.npz",
                 *([correction] if args.com_phase_steps else []),
                 *([refinement, infer_dir / "refinement.png"] if args.refine_steps else []),
                 infer_dir / "reconstructed_amplitude.png",
                 infer_dir / "reconstructed_phase.png", eval_dir / "comparison.png",
                 eval_dir / "frc.png"):
        print(f"  {path}{'' if path.exists() else '  (missing)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
