"""Command-line flags shared by the TensorFlow and PyTorch train/inference CLIs.

Every flag is accepted with underscores and with dashes (``--max_epochs`` / ``--max-epochs``),
legacy spellings are aliases (``--nepochs``, ``--n_images``, ``--neighbor_count``), booleans use
:class:`BooleanFlag` (``--probe_big`` / ``--probe-big`` / ``--no-probe-big`` / ``--no_probe_big``),
and every default is
``None`` so that a flag the user did not type never overrides the config file. The help texts
quote the built-in defaults from :mod:`ptycho.config`. The argparse destination of each flag is
the canonical field name, so :func:`namespace_to_overrides` can hand the given flags straight to
:func:`ptycho.config_bridge.resolve_config`.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Optional, Sequence

from ptycho.architecture import DECODERS
from ptycho.config import (
    ACCELERATORS,
    AMP_ACTIVATIONS,
    INTERPOLATIONS,
    LOGGERS,
    MODES,
    PRECISIONS,
    SECTIONS,
    STITCH_WEIGHTINGS,
    VALID_N,
    PtychoConfig,
)
from ptycho.config_bridge import FLAT_KEYS, GROUP_NEIGHBOUR_SLACK, Override, resolve_config
from ptycho.lr_schedule import LR_SCHEDULES

__all__ = [
    "BooleanFlag",
    "add_training_arguments",
    "add_inference_arguments",
    "add_execution_arguments",
    "namespace_to_overrides",
    "resolve_namespace",
    "inert_settings",
    "print_inert_settings",
]


def _default(section: str, name: str) -> Any:
    for f in dataclasses.fields(SECTIONS[section]):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    raise KeyError(f"{section}.{name}")


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _spellings(*names: str) -> list[str]:
    """``--a_b`` and ``--a-b`` for every name, without duplicates, in the given order."""
    out: list[str] = []
    for name in names:
        for variant in (name, name.replace("_", "-"), name.replace("-", "_")):
            flag = f"--{variant}"
            if flag not in out:
                out.append(flag)
    return out


class BooleanFlag(argparse.Action):
    """Boolean switch: every given spelling sets True; ``--no-`` plus the dashed form,
    ``--no_`` plus the underscore form and ``--no-`` plus each spelling as given set False, so
    ``--no-probe-big``, ``--no_probe_big`` and ``--no-probe_big`` all work."""

    def __init__(self, option_strings, dest, default=None, required=False, help=None):
        positive = list(option_strings)
        negative: list[str] = []
        for opt in positive:
            if not opt.startswith("--"):
                raise ValueError(f"boolean flag {opt!r} must start with '--'")
            stem = opt[2:]
            for neg in (f"--no-{stem.replace('_', '-')}", f"--no_{stem.replace('-', '_')}",
                        f"--no-{stem}"):
                if neg not in positive and neg not in negative:
                    negative.append(neg)
        self.negative_option_strings = tuple(negative)
        super().__init__(positive + negative, dest, nargs=0, default=default,
                         required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string not in self.negative_option_strings)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _add(parser: argparse.ArgumentParser, names: Sequence[str], dest: str, section: str,
         text: str, *, kind: Any = str, choices: Optional[Sequence[Any]] = None,
         default_note: Optional[str] = None) -> None:
    shown = default_note if default_note is not None else _show(_default(section, dest))
    help_text = f"{text} Default: {shown}, or the --config value."
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_text}
    if kind is bool:
        kwargs["action"] = BooleanFlag
    else:
        kwargs["type"] = kind
        if choices is not None:
            kwargs["choices"] = list(choices)
        kwargs["metavar"] = dest.upper() if choices is None else None
        if kwargs["metavar"] is None:
            del kwargs["metavar"]
    parser.add_argument(*_spellings(*names), **kwargs)


def _lower(value: str) -> str:
    return value.strip().lower()


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", dest="config", default=None, metavar="PATH",
                        help="YAML (.yaml/.yml) or JSON config file; nested canonical, flat or "
                             "legacy keys. Command-line flags override its values. "
                             "Default: none (built-in defaults).")


def add_training_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add data, model and training flags (plus ``--config``) to ``parser``; returns it."""
    g = parser.add_argument_group("data")
    _add(g, ["train_data_file"], "train_data_file", "data", "Training data NPZ file (path).")
    _add(g, ["test_data_file"], "test_data_file", "data",
         "Test/validation data NPZ file (path); without it a validation fraction of the training "
         "groups is held out.")
    _add(g, ["n_groups", "n_images"], "n_groups", "data",
         "Number of groups to use (count of groups; for gridsize 1, patterns).", kind=int,
         default_note="all")
    _add(g, ["K", "neighbor_count"], "K", "data",
         "Nearest neighbours each group is drawn from (count; >= gridsize**2 when gridsize > 1).",
         kind=int, default_note=f"derived from --gridsize: {_default('data', 'K')}, or "
                                f"gridsize**2 + {GROUP_NEIGHBOUR_SLACK} when gridsize**2 exceeds "
                                f"{_default('data', 'K')} (e.g. "
                                f"{9 + GROUP_NEIGHBOUR_SLACK} at gridsize 3)")
    _add(g, ["nphotons"], "nphotons", "data",
         "Mean photons per diffraction pattern (photons); needed only when the file holds "
         "already-normalised amplitudes.", kind=float,
         default_note="none (measured from the data)")

    g = parser.add_argument_group("model")
    _add(g, ["N"], "N", "model", "Diffraction pattern / patch side (pixels).", kind=int,
         choices=VALID_N, default_note="the side of the training data's diffraction patterns "
                                       "(and probe)")
    _add(g, ["gridsize", "grid_size"], "gridsize", "model",
         "Group side g; each group holds g**2 neighbouring patterns (count).", kind=int)
    _add(g, ["amp_activation"], "amp_activation", "model",
         "Amplitude head activation (name; 'silu' is accepted as 'swish').", kind=_lower,
         choices=AMP_ACTIVATIONS + ("silu",))
    _add(g, ["mode"], "mode", "model",
         "Training mode: physics (unsupervised PINN) or supervised on ground-truth patches "
         "(name, case-insensitive).", kind=_lower, choices=MODES)
    _add(g, ["interpolation"], "interpolation", "model",
         "Sub-pixel translation interpolation (name).", kind=_lower, choices=INTERPOLATIONS)
    _add(g, ["probe_big"], "probe_big", "model",
         "Predict the full N x N object patch instead of only the central N/2 x N/2 (boolean).",
         kind=bool)
    _add(g, ["probe_mask"], "probe_mask", "model",
         "Apply a circular probe support mask of radius N/4 (boolean).", kind=bool)
    _add(g, ["probe_trainable"], "probe_trainable", "model",
         "Refine the probe during training (boolean).", kind=bool)
    _add(g, ["intensity_scale_trainable"], "intensity_scale_trainable", "model",
         "Train the intensity scale (boolean).", kind=bool)
    _add(g, ["filter_scale"], "filter_scale", "model",
         "Multiplier of the network's filter counts (factor; 1 = 64/128/256 at N=64, "
         "0.5 trains about 3x faster on a CPU).", kind=float)
    _add(g, ["decoder"], "decoder", "model",
         "Network decoder (name): reference (DESIGN section 5: decodes at N/8..N/2, one conv to "
         "the patch) or unet (full resolution with skip connections from the encoder).",
         kind=_lower, choices=DECODERS)
    _add(g, ["per_pattern"], "per_pattern", "model",
         "Run the network on each pattern of a group alone, with weights shared by the members, "
         "so that only the overlap constraint couples them (boolean; gridsize > 1).", kind=bool)
    _add(g, ["projection_steps"], "projection_steps", "model",
         "Error-reduction projections of each group's object onto its measured amplitudes after "
         "the overlap constraint, in training and inference (count; 0 = the network alone).",
         kind=int)
    _add(g, ["group_pad"], "group_pad", "model",
         "Per-group canvas padding for the overlap constraint (pixels).", kind=int,
         default_note="N//2")

    g = parser.add_argument_group("training")
    _add(g, ["output_dir"], "output_dir", "training", "Output directory for the run (path).")
    _add(g, ["max_epochs", "nepochs"], "max_epochs", "training", "Training epochs (count).",
         kind=int)
    _add(g, ["batch_size"], "batch_size", "training", "Groups per optimiser step (count).",
         kind=int)
    _add(g, ["learning_rate"], "learning_rate", "training",
         "Adam learning rate (per step, dimensionless).", kind=float)
    _add(g, ["lr_schedule"], "lr_schedule", "training",
         "Learning-rate schedule (name): plateau reduces it when the monitored loss stalls; "
         "cosine warms up, then decays it every step to --min_learning_rate (early stopping "
         "still applies).", kind=_lower,
         choices=LR_SCHEDULES)
    _add(g, ["lr_warmup_fraction"], "lr_warmup_fraction", "training",
         "Cosine schedule: fraction of all steps spent warming up (0 <= value < 1).", kind=float)
    _add(g, ["lr_reduce_factor"], "lr_reduce_factor", "training",
         "Factor the learning rate is multiplied by on a plateau (0 < value < 1).", kind=float)
    _add(g, ["lr_reduce_patience"], "lr_reduce_patience", "training",
         "Epochs without improvement before the learning rate is reduced (epochs).", kind=int)
    _add(g, ["min_learning_rate"], "min_learning_rate", "training",
         "Lower bound of the learning rate; with the cosine schedule the rate of the last "
         "step (dimensionless).", kind=float)
    _add(g, ["early_stopping_patience"], "early_stopping_patience", "training",
         "Epochs without improvement before training stops (epochs).", kind=int)
    _add(g, ["validation_fraction"], "validation_fraction", "training",
         "Fraction of training groups held out when no test file is given (0 < value < 1).",
         kind=float)
    _add(g, ["log_patch_stats"], "log_patch_stats", "training",
         "Record statistics and an image grid of predicted patches (boolean).", kind=bool)
    _add(g, ["patch_stats_limit"], "patch_stats_limit", "training",
         "Batches per phase for which patch statistics are recorded (count).", kind=int)
    _add(g, ["resume"], "resume", "training",
         "Resume from the last checkpoint in the output directory (boolean).", kind=bool)
    _add_config_flag(parser)
    return parser


def add_inference_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add inference flags (plus ``--config``) to ``parser``; returns it."""
    g = parser.add_argument_group("inference")
    _add(g, ["model_path"], "model_path", "inference", "Model bundle directory (path).")
    _add(g, ["test_data"], "test_data", "inference", "Data NPZ file to reconstruct (path).")
    _add(g, ["output_dir"], "output_dir", "inference", "Output directory (path).")
    _add(g, ["batch_size"], "batch_size", "inference", "Groups per forward pass (count).",
         kind=int)
    _add(g, ["n_groups", "n_images"], "n_groups", "data",
         "Number of groups to reconstruct (count of groups).", kind=int, default_note="all")
    _add(g, ["stitch_crop"], "stitch_crop", "inference",
         "Central crop of each predicted patch placed when stitching (pixels).", kind=int,
         default_note="N with probe_big, else N//2")
    _add(g, ["stitch_weighting"], "stitch_weighting", "inference",
         "Weight of each patch pixel when overlapping patches are averaged: the probe "
         "intensity that measured it, or uniform (name).", kind=_lower,
         choices=STITCH_WEIGHTINGS)
    _add(g, ["refine_steps"], "refine_steps", "inference",
         "After stitching, refine the object by this many gradient steps of the Poisson "
         "likelihood against all measured patterns (probe fixed unless --refine-probe); 0 "
         "keeps the network's object (count).", kind=int)
    _add(g, ["refine_learning_rate"], "refine_learning_rate", "inference",
         "Adam step size of the refinement (per step: natural-log units of the amplitude, "
         "radians of the phase).", kind=float)
    _add(g, ["refine_probe"], "refine_probe", "inference",
         "Refine the scan's probe together with the object (boolean; needs --refine-steps).",
         kind=bool)
    _add(g, ["com_phase_steps"], "com_phase_steps", "inference",
         "Before any refinement, correct the slow phase of the stitched object from the "
         "measured patterns' centres of mass in this many linear steps (amplitude unchanged); "
         "0 keeps it as stitched (count).", kind=int)
    _add(g, ["com_phase_smoothing"], "com_phase_smoothing", "inference",
         "Smoothness weight of the centre-of-mass phase correction (dimensionless, per "
         "pattern density).", kind=float)
    _add(g, ["projection_steps"], "projection_steps", "model",
         "Per-group projections onto the measured amplitudes inside the model (count; they "
         "have no weights, so any number may be used at inference).", kind=int,
         default_note="the bundle's")
    _add(g, ["log_patch_stats"], "log_patch_stats", "inference",
         "Record statistics and an image grid of predicted patches (boolean).", kind=bool)
    _add(g, ["patch_stats_limit"], "patch_stats_limit", "inference",
         "Batches for which patch statistics are recorded (count).", kind=int)
    _add_config_flag(parser)
    return parser


def add_execution_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add device, precision, logging and seeding flags to ``parser``; returns it."""
    g = parser.add_argument_group("execution")
    _add(g, ["accelerator"], "accelerator", "execution", "Device type (name).", kind=_lower,
         choices=ACCELERATORS)
    _add(g, ["devices"], "devices", "execution", "Number of devices (count) or 'auto'.")
    _add(g, ["strategy"], "strategy", "execution", "Distribution strategy (Lightning name).")
    _add(g, ["precision"], "precision", "execution", "Numeric precision (name).",
         choices=PRECISIONS)
    _add(g, ["num_workers"], "num_workers", "execution",
         "Data loader worker processes (count).", kind=int)
    _add(g, ["logger"], "logger", "execution", "Metrics logger (name).", kind=_lower,
         choices=LOGGERS)
    _add(g, ["seed"], "seed", "execution",
         "Random seed for grouping and for the global RNGs (integer >= 0).", kind=int)
    _add(g, ["deterministic"], "deterministic", "execution",
         "Request deterministic kernels (boolean).", kind=bool)
    _add(g, ["jit_compile"], "jit_compile", "execution",
         "Compile the TensorFlow model with XLA (boolean).", kind=bool)
    return parser


def namespace_to_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    """Flat ``{canonical_field_name: value}`` of the shared flags the user gave (not None).

    ``--config`` and flags a CLI adds for itself are not included.
    """
    return {k: v for k, v in vars(ns).items() if k in FLAT_KEYS and v is not None}


def resolve_namespace(ns: argparse.Namespace, context: str = "training",
                      base: Optional[PtychoConfig] = None
                      ) -> tuple[PtychoConfig, tuple[Override, ...]]:
    """``resolve_config`` from parsed flags: defaults < ``base`` < ``--config`` file < flags."""
    return resolve_config(namespace_to_overrides(ns), yaml_path=getattr(ns, "config", None),
                          base=base, context=context)


def inert_settings(execution, backend: str) -> list[str]:
    """Notes on execution settings (``ptycho.config.ExecutionConfig``) that ``backend``
    (``"tf"`` or ``"torch"``) accepts but does not use, so the CLIs can say so instead of
    ignoring them silently."""
    notes = []
    if backend == "tf" and execution.num_workers > 0:
        notes.append(f"execution.num_workers={execution.num_workers} has no effect on the "
                     "TensorFlow backend (it prepares its batches in the main process)")
    if backend == "torch" and execution.jit_compile:
        notes.append("execution.jit_compile (XLA) has no effect on the PyTorch backend")
    return notes


def print_inert_settings(execution, backend: str, prog: str) -> None:
    """Print each :func:`inert_settings` note as ``{prog}: note: ...`` on stdout."""
    for note in inert_settings(execution, backend):
        print(f"{prog}: note: {note}", flush=True)
