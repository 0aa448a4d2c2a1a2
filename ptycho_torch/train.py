"""``python -m ptycho_torch.train``: train a PtychoPINN model with PyTorch Lightning.

Flags come from :mod:`ptycho.cli_common` (shared with the TensorFlow CLI); every flag defaults to
"not given", so values in ``--config`` are only overridden by flags actually typed. The flags and
the config file become one :class:`~ptycho.payload.TrainingPayload`, which is handed unchanged to
the training workflow (:func:`ptycho_torch.workflows.components.run_training`). Outputs are
described there; the model bundle is ``<output_dir>/model``.

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
    """The argument parser of ``python -m ptycho_torch.train``."""
    parser = argparse.ArgumentParser(
        prog="python -m ptycho_torch.train",
        description="Train a physics-informed ptychography network (PyTorch/Lightning backend) "
                    "and write a model bundle to <output_dir>/model.")
    add_training_arguments(parser)
    add_execution_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    from ptycho_torch.workflows.components import build_training_payload, run_training

    try:
        payload, train, test = build_training_payload(namespace_to_overrides(args), args.config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = payload.config
    print_inert_settings(cfg.execution, "torch", "ptycho_torch.train")
    print(f"ptycho_torch.train: {train.M} patterns of {train.N}x{train.N} from "
          f"{cfg.data.train_data_file}; gridsize {cfg.model.gridsize}; "
          f"intensity scale {payload.stats.intensity_scale:.6g}, normalisation factor "
          f"{payload.stats.normalization_factor:.6g}", flush=True)
    try:
        result = run_training(payload, train, test)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ptycho_torch.train: {result.epochs_run} epochs, best epoch {result.best_epoch + 1}, "
          f"trained intensity scale {result.intensity_scale:.6g}; bundle {result.bundle_dir}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
