"""``python -m ptycho.train``: train a PtychoPINN model with the TensorFlow/Keras backend.

Flags come from :mod:`ptycho.cli_common` (shared with the PyTorch CLI): every flag defaults to
"not given", so a ``--config`` file's values are overridden only by flags actually typed;
``--N`` defaults to the training data's pattern size. Flags and file become one
:class:`~ptycho.payload.TrainingPayload` that drives the run and is written into the bundle
(:func:`ptycho.workflow.run_training`, which also describes the outputs; the bundle is
``<output_dir>/model``).

Exit status: 0 on success, 2 for invalid flags, config or data (the message names the culprit).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ptycho.cli_common import (add_execution_arguments, add_training_arguments,
                               namespace_to_overrides, print_inert_settings)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ptycho.train``."""
    parser = argparse.ArgumentParser(
        prog="python -m ptycho.train",
        description="Train a physics-informed ptychography network (TensorFlow/Keras backend) "
                    "and write a model bundle to <output_dir>/model.")
    add_training_arguments(parser)
    add_execution_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    from ptycho.tf_checkpoint import checkpoint_path
    from ptycho.workflow import build_training_payload, run_training

    try:
        payload, train, test = build_training_payload(namespace_to_overrides(args), args.config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = payload.config
    print_inert_settings(cfg.execution, "tf", "ptycho.train")
    print(f"ptycho.train: {train.M} patterns of {train.N}x{train.N} from "
          f"{cfg.data.train_data_file}; gridsize {cfg.model.gridsize}; "
          f"intensity scale {payload.stats.intensity_scale:.6g}, normalisation factor "
          f"{payload.stats.normalization_factor:.6g}", flush=True)
    try:
        result = run_training(payload, train, test,
                              log=lambda line: print(line, flush=True))
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ptycho.train: interrupted; no bundle was written. Continue with --resume "
              f"(from {checkpoint_path(cfg.training.output_dir)})", file=sys.stderr)
        return 130
    print(f"ptycho.train: {result.epochs_run} epochs, best epoch {result.best_epoch + 1}, "
          f"trained intensity scale {result.intensity_scale:.6g}; bundle {result.bundle_dir}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
