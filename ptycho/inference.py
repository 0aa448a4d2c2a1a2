"""``python -m ptycho.inference``: reconstruct a scan with a trained TensorFlow model bundle.

Steps: load and verify the bundle (``ptycho.bundle.load_bundle``; a bundle without a valid
intensity scale is refused) and log its intensity scale; rebuild the model and load its
``.weights.h5``; group the test data exactly like training (gridsize, K, seed; ``--n_groups``
default all) and normalise it by its own normalisation factor; predict every group in batches of
``--batch_size`` (the last partial batch included) and stitch each batch into a
``ptycho.stitch.Stitcher`` (memory bounded by the canvas; the canvas is the ``objectGuess``
shape when the file has one, else the bounding box of the positions; ``--stitch_crop`` central
pixels of each patch are placed).

Writes into ``--output_dir``:

* ``reconstruction.npz``: ``object`` (H, W) complex64, ``amplitude``, ``phase`` (float32),
  ``weight``, ``scanned_mask``, ``illuminated_mask`` (the scanned pixels the probe lit; the
  region of the metrics), ``origin`` (y0, x0: object pixel of canvas pixel (0, 0)),
  ``canvas_y`` (H,) / ``canvas_x`` (W,) object coordinates of the canvas rows/columns,
  ``scan_index`` and ``scan_positions`` (canvas (y, x) of every reconstructed scan position),
  ``stitch_crop``, ``refine_steps``, ``com_phase_steps``, ``projection_steps``; when the
  centre-of-mass phase correction (``--com-phase-steps``) or refinement ran, ``object`` is the
  corrected / refined object and ``network_object`` the network's; with ``--refine-probe``,
  ``refined_probe`` is the refined probe;
* ``reconstructed_amplitude.png``, ``reconstructed_phase.png``;
* ``metrics.json`` (``ptycho.metrics.evaluate_reconstruction``) when the data hold an
  ``objectGuess``;
* ``phase_correction.json`` when the phase was corrected; ``refinement.json`` and
  ``refinement.png`` when refined;
* ``timing.json``: seconds loading / predicting / stitching / correcting / refining, total,
  patterns per second, peak RSS;
* with ``--log-patch-stats``: ``tf_patch_stats.json`` and ``tf_patch_grid.png`` of the
  predicted patches (phase ``inference``).

``--model_path`` may be the bundle directory or the training output directory holding
``model/``. Model settings come from the bundle, except ``--projection_steps``, which has no
weights. Exit status 0 on success, 2 for invalid input.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

from ptycho.cli_common import (add_execution_arguments, add_inference_arguments,
                               namespace_to_overrides, print_inert_settings)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ptycho.inference``."""
    parser = argparse.ArgumentParser(
        prog="python -m ptycho.inference",
        description="Reconstruct a ptychographic scan with a trained TensorFlow model bundle: "
                    "stitched object (NPZ, PNGs), metrics against objectGuess, timing.")
    add_inference_arguments(parser)
    add_execution_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    from ptycho.workflow import resolve_inference_payload, run_inference

    try:
        payload, bundle = resolve_inference_payload(namespace_to_overrides(args), args.config)
        print_inert_settings(payload.config.execution, "tf", "ptycho.inference")
        result = run_inference(payload, bundle, t_start=t0,
                               log=lambda line: print(line, flush=True))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary_line("ptycho.inference", payload.config.inference.output_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
