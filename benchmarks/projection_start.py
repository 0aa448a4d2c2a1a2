"""How much of a projected reconstruction is the network's? The same projections from a flat start.

A model trained with ``--projection_steps K`` reconstructs through the network and then K
error-reduction projections of every group onto its own measured patterns. The projections
alone already recover some of the object, so the network's share is measured against a
*flat* model: a copy of the bundle whose network outputs amplitude 1 and phase 0 for every
input (every convolution kernel zero, the amplitude heads' biases ``log(e - 1)`` so that
softplus gives 1; the unit amplitude is the object's RMS in the model's units). Both bundles go
through the same PyTorch inference CLI on the same scan, with the same K, grouping and
stitching, and are scored on its illuminated region::

    python -m benchmarks.projection_start --model_path RUN --test_data TEST.npz \\
        --output_dir OUT [--steps 0 5 10]

``--steps`` reruns both with other projection counts (the bundle's own K is the default);
``--com_phase_steps S`` also corrects both stitched objects' slow phase from the patterns'
centres of mass (``ptycho.com_phase``), and the table then gives the scores before and after.
Writes
``OUT/{network,flat}_K{k}/`` (the inference outputs) and ``OUT/projection_start.json``, and
prints a table of amplitude / phase SSIM.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.report import markdown_table
from ptycho.atomic import atomic_write_json

__all__ = ["flat_network_weights", "write_variant_bundle", "projection_start", "main"]

# softplus(log(e - 1)) = 1
UNIT_SOFTPLUS_BIAS = math.log(math.e - 1.0)


def flat_network_weights(module) -> None:
    """Zero every convolution of a torch ``PtychoPINN`` in place and set the amplitude heads'
    biases so that the network returns amplitude 1 (softplus) and phase 0 for any input."""
    import torch

    if module.amp_activation != "softplus":
        raise ValueError(f"a flat start needs the softplus amplitude head, the bundle uses "
                         f"{module.amp_activation!r}")
    with torch.no_grad():
        for name, conv in module.named_children():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.zero_()
                head = name.startswith("amp") and name.endswith("out")
                conv.bias.fill_(UNIT_SOFTPLUS_BIAS if head else 0.0)


def write_variant_bundle(bundle, out_dir: Path, steps: int, flat: bool) -> Path:
    """A copy of a loaded torch bundle with ``projection_steps = steps`` (and flat weights)."""
    from ptycho.bundle import write_bundle
    from ptycho_torch.inference import load_model
    from ptycho_torch.workflows.components import WEIGHTS_FILENAME, save_state_dict

    payload = bundle.training_payload()
    model_cfg = dataclasses.replace(payload.config.model, projection_steps=int(steps))
    config = dataclasses.replace(payload.config, model=model_cfg)
    payload = dataclasses.replace(payload, config=config)
    module = load_model(bundle)
    if flat:
        flat_network_weights(module)
    return write_bundle(out_dir, backend="torch", payload=payload,
                        write_weights=lambda p: save_state_dict(module, p),
                        weights_filename=WEIGHTS_FILENAME, intensity_scale=bundle.intensity_scale,
                        history_summary={"variant": "flat" if flat else "network",
                                         "projection_steps": int(steps)})


def projection_start(model_path: str, test_data: str, output_dir: str,
                     steps: Optional[Sequence[int]] = None, batch_size: int = 64,
                     com_phase_steps: int = 0) -> list[dict]:
    """Infer ``test_data`` with the network and with the flat start for each K (module doc)."""
    from ptycho.bundle import load_bundle, resolve_bundle_dir
    from ptycho_torch import inference

    bundle = load_bundle(resolve_bundle_dir(model_path))
    if bundle.backend != "torch":
        raise ValueError(f"{model_path}: a PyTorch bundle is needed (convert it with "
                         f"ptycho-convert --to torch), got backend {bundle.backend!r}")
    out = Path(output_dir)
    ks = [int(bundle.config.model.projection_steps)] if not steps else [int(k) for k in steps]
    rows = []
    for k in ks:
        for variant in ("network", "flat"):
            run = out / f"{variant}_K{k}"
            model_dir = write_variant_bundle(bundle, run / "model", k, flat=variant == "flat")
            rc = inference.main(["--model_path", str(model_dir), "--test_data", str(test_data),
                                 "--output_dir", str(run / "inference"),
                                 "--batch_size", str(batch_size),
                                 "--com_phase_steps", str(com_phase_steps)])
            if rc != 0:
                raise RuntimeError(f"inference of {model_dir} failed with exit status {rc}")
            metrics = json.loads((run / "inference" / "metrics.json").read_text())
            timing = json.loads((run / "inference" / "timing.json").read_text())
            row = {"start": variant, "projection_steps": k, "com_phase_steps": com_phase_steps,
                   "amp_ssim": metrics["amp_ssim"], "phase_ssim": metrics["phase_ssim"],
                   "amp_psnr": metrics["amp_psnr"], "phase_psnr": metrics["phase_psnr"],
                   "predict_s": timing["predict_s"]}
            if com_phase_steps > 0:
                before = json.loads((run / "inference" / "phase_correction.json").read_text())
                row["phase_ssim_uncorrected"] = before["network_metrics"]["phase_ssim"]
                row["com_phase_s"] = timing["com_phase_s"]
            rows.append(row)
    atomic_write_json(out / "projection_start.json",
                      {"model_path": str(model_path), "test_data": str(test_data), "rows": rows})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.projection_start",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", required=True, help="trained PyTorch run or bundle")
    parser.add_argument("--test_data", required=True, help="scan with objectGuess (NPZ)")
    parser.add_argument("--output_dir", required=True, help="where both inferences go")
    parser.add_argument("--steps", type=int, nargs="*", default=None,
                        help="projection counts K to compare (default: the bundle's)")
    parser.add_argument("--batch_size", type=int, default=64, help="groups per inference batch")
    parser.add_argument("--com_phase_steps", type=int, default=0,
                        help="centre-of-mass phase correction steps after stitching (0: none)")
    args = parser.parse_args(argv)
    if args.com_phase_steps < 0:
        parser.error(f"--com_phase_steps must be >= 0, got {args.com_phase_steps}")
    rows = projection_start(args.model_path, args.test_data, args.output_dir, args.steps,
                            args.batch_size, args.com_phase_steps)
    corrected = args.com_phase_steps > 0
    head = ["start", "K", "amplitude SSIM", "phase SSIM"]
    head += ["phase SSIM before correction", "correction s"] if corrected else []
    body = []
    for r in rows:
        line = [r["start"], r["projection_steps"], f"{r['amp_ssim']:.3f}", f"{r['phase_ssim']:.3f}"]
        if corrected:
            line += [f"{r['phase_ssim_uncorrected']:.3f}", f"{r['com_phase_s']:.1f}"]
        body.append(line + [f"{r['predict_s']:.1f}"])
    print(markdown_table(head + ["predict s"], body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
