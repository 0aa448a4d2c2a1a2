"""How much does the network's object help the physics refinement, against a flat start?

Takes one inference run (``reconstruction.npz`` of ``python -m ptycho_torch.inference`` or
``python -m ptycho.inference``), its test scan with ground truth and the model bundle, and runs
``ptycho.refine.refine_object`` for each step count twice: from the network's stitched object and
from a flat object (the network's median amplitude on the illuminated region, zero phase). Both
are scored against the truth on the run's illuminated mask with ``ptycho.metrics``. If the flat
start reaches the same quality in the same steps, the network contributed nothing to the result.

    python -m benchmarks.refine_start INFERENCE_DIR --test-data TEST.npz --model_path BUNDLE \\
        [--steps 0 25 50 100 200] [--learning-rate 0.02] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from benchmarks.report import markdown_table
from ptycho.atomic import atomic_write_json
from ptycho.bundle import read_manifest, resolve_bundle_dir
from ptycho.data.contract import load_npz
from ptycho.metrics import evaluate_reconstruction
from ptycho.refine import DEFAULT_LEARNING_RATE, refine_object

__all__ = ["compare_starts", "main"]


def _load_run(inference_dir: str) -> dict:
    path = Path(inference_dir) / "reconstruction.npz"
    if not path.is_file():
        raise ValueError(f"{inference_dir}: no reconstruction.npz (run the inference CLI first)")
    with np.load(path, allow_pickle=False) as z:
        key = "network_object" if "network_object" in z.files else "object"
        return {"object": z[key], "mask": z["illuminated_mask"], "index": z["scan_index"],
                "positions": z["scan_positions"]}


def compare_starts(inference_dir: str, test_data: str, model_path: str,
                   steps: Sequence[int] = (0, 25, 50, 100, 200),
                   learning_rate: float = DEFAULT_LEARNING_RATE) -> dict:
    """Rows ``{start, steps, amp_ssim, phase_ssim, nll_per_pattern, seconds}`` (see module doc)."""
    run = _load_run(inference_dir)
    data = load_npz(test_data)
    if data.object is None:
        raise ValueError(f"{test_data}: the comparison needs the ground truth (key 'objectGuess')")
    if run["object"].shape != data.object.shape:
        raise ValueError(f"{inference_dir}: canvas {run['object'].shape} is not the frame of "
                         f"{test_data}'s objectGuess {data.object.shape}")
    scale = float(read_manifest(resolve_bundle_dir(model_path))["intensity_scale"])
    patterns = data.diffraction[run["index"]]
    net, mask = run["object"], run["mask"]
    flat = np.full(net.shape, np.median(np.abs(net[mask])), np.complex64)
    rows = []
    for name, start in (("network", net), ("flat", flat)):
        for n in steps:
            t0 = time.perf_counter()
            res = refine_object(start, patterns, run["positions"], data.probe, scale,
                                steps=int(n), learning_rate=learning_rate)
            seconds = time.perf_counter() - t0
            m = evaluate_reconstruction(res.obj, data.object, mask=mask)
            rows.append({"start": name, "steps": int(n), "amp_ssim": m["amp_ssim"],
                         "phase_ssim": m["phase_ssim"], "nll_per_pattern": res.nll_end,
                         "seconds": seconds})
            print(f"{name} start, {n} steps: amplitude / phase SSIM {m['amp_ssim']:.3f} / "
                  f"{m['phase_ssim']:.3f} ({seconds:.1f} s)", flush=True)
    return {"inference_dir": str(inference_dir), "test_data": str(test_data),
            "model_path": str(model_path), "intensity_scale": scale,
            "learning_rate": learning_rate, "n_patterns": int(len(patterns)), "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.refine_start", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inference_dir", help="output folder of one inference run")
    p.add_argument("--test-data", "--test_data", dest="test_data", required=True,
                   help="the scan that run reconstructed (.npz with objectGuess)")
    p.add_argument("--model_path", "--model-path", dest="model_path", required=True,
                   help="the model bundle of that run, or its training output directory "
                        "(for its intensity scale)")
    p.add_argument("--steps", type=int, nargs="+", default=[0, 25, 50, 100, 200],
                   help="refinement step counts (default: 0 25 50 100 200)")
    p.add_argument("--learning-rate", "--learning_rate", dest="learning_rate", type=float,
                   default=DEFAULT_LEARNING_RATE, help="refinement Adam step size")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    if any(n < 0 for n in a.steps):
        p.error(f"--steps must be >= 0, got {a.steps}")
    try:
        result = compare_starts(a.inference_dir, a.test_data, a.model_path, a.steps,
                                a.learning_rate)
    except ValueError as exc:
        p.error(str(exc))
    print(markdown_table(
        ["start", "steps", "amplitude SSIM", "phase SSIM", "NLL per pattern", "seconds"],
        [[r["start"], r["steps"], f"{r['amp_ssim']:.3f}", f"{r['phase_ssim']:.3f}",
          f"{r['nll_per_pattern']:.6g}", f"{r['seconds']:.1f}"] for r in result["rows"]]))
    if a.json:
        atomic_write_json(a.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
