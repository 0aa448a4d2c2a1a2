"""Unified command-line entry points for both backends: ``ptycho-train`` and ``ptycho-infer``.

* ``ptycho-train --backend {tensorflow,pytorch} [flags]`` (default ``pytorch``) trains with the
  chosen backend. The flags are the shared set of :mod:`ptycho.cli_common` (every flag as
  ``--flag_name`` and ``--flag-name``), so the same command line works for either backend; the
  run is exactly ``python -m ptycho.train`` / ``python -m ptycho_torch.train`` with the same
  flags.
* ``ptycho-infer [--backend ...] --model_path BUNDLE --test_data FILE [flags]`` reads the
  backend from the bundle's manifest and runs that backend's inference
  (``python -m ptycho.inference`` / ``python -m ptycho_torch.inference``). With ``--backend``
  naming the other backend, the bundle is first converted (``ptycho.convert.convert_bundle``)
  into a temporary directory, which is removed afterwards.

``python -m ptycho.cli train ...`` and ``python -m ptycho.cli infer ...`` do the same. Every
entry point returns its exit status: 0 on success, 2 for invalid flags, config or data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from ptycho.cli_common import (add_execution_arguments, add_inference_arguments,
                               add_training_arguments, resolve_namespace)

__all__ = ["BACKEND_CHOICES", "build_train_parser", "build_infer_parser", "train_main",
           "infer_main", "main"]

BACKEND_CHOICES = ("tensorflow", "pytorch", "tf", "torch")
DEFAULT_TRAIN_BACKEND = "pytorch"


def _add_backend(parser: argparse.ArgumentParser, default: Optional[str], text: str) -> None:
    parser.add_argument("--backend", dest="backend", type=str.lower, choices=BACKEND_CHOICES,
                        default=default, help=text)


def build_train_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ptycho-train``."""
    parser = argparse.ArgumentParser(
        prog="ptycho-train", allow_abbrev=False,
        description="Train a physics-informed ptychography network with the TensorFlow or "
                    "PyTorch backend and write a model bundle to <output_dir>/model.")
    _add_backend(parser, DEFAULT_TRAIN_BACKEND,
                 f"Backend to train with (tensorflow|pytorch; tf and torch are aliases). "
                 f"Default: {DEFAULT_TRAIN_BACKEND}.")
    add_training_arguments(parser)
    add_execution_arguments(parser)
    return parser


def build_infer_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ptycho-infer``."""
    parser = argparse.ArgumentParser(
        prog="ptycho-infer", allow_abbrev=False,
        description="Reconstruct a ptychographic scan with a trained model bundle, using the "
                    "backend recorded in the bundle (or another one via --backend, converting "
                    "the bundle on the fly).")
    _add_backend(parser, None,
                 "Backend to run inference with (tensorflow|pytorch; tf and torch are "
                 "aliases); a bundle of the other backend is converted into a temporary "
                 "directory first. Default: none (the bundle's own backend).")
    add_inference_arguments(parser)
    add_execution_arguments(parser)
    return parser


def _without_backend(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``--backend X`` / ``--backend=X`` removed (the backend CLIs do not
    know the flag; abbreviations are disabled, so no other spelling exists)."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--backend":
            skip = True
            continue
        if token.startswith("--backend="):
            continue
        out.append(token)
    return out


def _backend_main(kind: str, backend: str) -> Callable[[Optional[Sequence[str]]], int]:
    """The ``main`` of ``python -m ptycho[_torch].{train,inference}`` for bundle backend name."""
    if kind == "train":
        if backend == "tf":
            from ptycho.train import main
        else:
            from ptycho_torch.train import main
    else:
        if backend == "tf":
            from ptycho.inference import main
        else:
            from ptycho_torch.inference import main
    return main


def _argv(argv: Optional[Sequence[str]]) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """``ptycho-train``: parse the shared flags plus ``--backend`` and run that backend's
    training CLI with the same flags; returns its exit status."""
    from ptycho.convert import normalize_backend

    argv = _argv(argv)
    args = build_train_parser().parse_args(argv)
    backend = normalize_backend(args.backend)
    return _backend_main("train", backend)(_without_backend(argv))


def infer_main(argv: Optional[Sequence[str]] = None) -> int:
    """``ptycho-infer``: run inference with the bundle's backend, or convert the bundle to the
    ``--backend`` given and run that one; returns the exit status."""
    from ptycho.bundle import read_manifest
    from ptycho.config import ConfigError
    from ptycho.convert import convert_bundle, normalize_backend, resolve_bundle_dir

    argv = _argv(argv)
    args = build_infer_parser().parse_args(argv)
    try:
        config, _ = resolve_namespace(args, context="inference")
        if config.inference.model_path is None:
            raise ConfigError("inference.model_path: required; give --model_path")
        bundle_dir = resolve_bundle_dir(config.inference.model_path)
        bundle_backend = read_manifest(bundle_dir).get("backend")
        bundle_backend = normalize_backend(bundle_backend) if isinstance(bundle_backend, str) \
            else bundle_backend
        if bundle_backend not in ("tf", "torch"):
            raise ValueError(f"{bundle_dir}: manifest backend {bundle_backend!r} is neither "
                             "'tf' nor 'torch'")
        wanted = bundle_backend if args.backend is None else normalize_backend(args.backend)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    forwarded = _without_backend(argv)
    if wanted == bundle_backend:
        return _backend_main("infer", wanted)(forwarded)
    with tempfile.TemporaryDirectory(prefix="ptycho-infer-") as tmp:
        converted = Path(tmp) / "model"
        try:
            convert_bundle(bundle_dir, converted, to=wanted)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"ptycho-infer: converted the {bundle_backend} bundle {bundle_dir} to a {wanted} "
              f"bundle for this run", flush=True)
        # The later --model_path wins over the user's (or the config file's) value.
        return _backend_main("infer", wanted)(forwarded + ["--model_path", str(converted)])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ptycho.cli {train,infer} [flags]``."""
    argv = _argv(argv)
    commands = {"train": train_main, "infer": infer_main}
    if not argv or argv[0] not in commands:
        if argv and argv[0] in ("-h", "--help"):
            print("usage: python -m ptycho.cli {train,infer} [flags]\n\n"
                  "  train  train with --backend tensorflow|pytorch (ptycho-train)\n"
                  "  infer  reconstruct with a model bundle (ptycho-infer)\n\n"
                  "'python -m ptycho.cli train --help' lists the flags of a command.")
            return 0
        print("usage: python -m ptycho.cli {train,infer} [flags]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
