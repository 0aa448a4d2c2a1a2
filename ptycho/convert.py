"""Backend-neutral weight layout and model-bundle conversion between TensorFlow and PyTorch.

Both backends build the same network (``docs/api_contract.md``, "Network"), so a trained model
converts one-to-one through a *canonical* weight dictionary ``name -> np.ndarray``:

* ``"{layer}/kernel"``: convolution kernel in HWIO order ``(3, 3, in, out)`` (the Keras layout;
  a torch ``Conv2d.weight`` ``(out, in, 3, 3)`` is ``weight.permute(2, 3, 1, 0)``);
* ``"{layer}/bias"``: ``(out,)``;
* ``"log_intensity_scale"``: ``()`` (``s = exp(value)``);
* ``"probe"``: ``(N, N, 2)``: real and imaginary parts of the normalised probe.

``{layer}`` runs over :func:`conv_layer_names`. Arrays keep the dtype the source model stores
(float32, or float64 for models built with precision ``"64"``); nothing is rounded, so a
conversion there and back reproduces every array bit for bit.
The backend adapters are :mod:`ptycho.tf_weights` and :mod:`ptycho_torch.weights`.

:func:`convert_bundle` turns a bundle of one backend into an equivalent bundle of the other:
same config, probe, trained intensity scale, input normalisation, data provenance, overrides and
training-history summary; its manifest adds ``converted_from`` (source backend, directory,
weights file and sha256). ``python -m ptycho.convert --to torch|tensorflow MODEL_DIR OUT_DIR``
(also installed as ``ptycho-convert``) runs it from the command line.

Importing this module imports neither TensorFlow nor PyTorch; each is imported only when a
bundle of (or for) that backend is read or written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ptycho.architecture import conv_layers, network_filters
from ptycho.bundle import resolve_bundle_dir

__all__ = [
    "BACKEND_ALIASES",
    "PRECISION_64",
    "normalize_backend",
    "network_filters",
    "conv_layer_names",
    "canonical_shapes",
    "check_canonical",
    "resolve_bundle_dir",
    "read_bundle_weights",
    "convert_bundle",
    "build_parser",
    "main",
]

BACKEND_ALIASES = {"tf": "tf", "tensorflow": "tf", "keras": "tf",
                   "torch": "torch", "pytorch": "torch"}
PRECISION_64 = "64"
CONVERTED_FROM_KEY = "converted_from"


def normalize_backend(name: Any) -> str:
    """Bundle backend name (``"tf"`` | ``"torch"``) of a user spelling such as ``"tensorflow"``
    or ``"pytorch"`` (case-insensitive); ``ValueError`` naming the valid spellings otherwise."""
    key = str(name).strip().lower() if isinstance(name, str) else None
    if key not in BACKEND_ALIASES:
        raise ValueError(f"unknown backend {name!r}; use one of "
                         f"{', '.join(sorted(BACKEND_ALIASES))}")
    return BACKEND_ALIASES[key]


def conv_layer_names(N: int, probe_big: bool, decoder: str = "reference") -> list[str]:
    """Names of every convolution of the network, in the contract's order."""
    # The names depend on neither the filter counts nor C.
    return [name for name, _, _ in conv_layers(N, 1, probe_big, decoder=decoder)]


def canonical_shapes(model_config) -> dict[str, tuple[int, ...]]:
    """``{canonical name: shape}`` of every weight of the model described by ``model_config``
    (a ``ptycho.config.ModelConfig``: N, gridsize, probe_big, filter_scale, decoder,
    per_pattern), in the contract's order. The network has ``C = gridsize**2`` input and head
    output planes, or one with ``per_pattern``."""
    N = int(model_config.N)
    C = int(model_config.network_channels)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout in conv_layers(N, C, bool(model_config.probe_big),
                                       getattr(model_config, "filter_scale", 1.0),
                                       getattr(model_config, "decoder", "reference")):
        shapes[f"{name}/kernel"] = (3, 3, cin, cout)
        shapes[f"{name}/bias"] = (cout,)
    shapes["log_intensity_scale"] = ()
    shapes["probe"] = (N, N, 2)
    return shapes


def check_canonical(weights: Mapping[str, Any], model_config,
                    where: str = "weights") -> dict[str, np.ndarray]:
    """Validate a canonical weight dict against ``model_config``; returns it as NumPy arrays
    in the canonical order.

    Raises ``ValueError`` naming ``where`` and the offending key for a missing or unexpected
    name, a wrong shape, a non-floating dtype or a NaN/Inf value.
    """
    if not isinstance(weights, Mapping):
        raise ValueError(f"{where}: expected a mapping name -> array, got {type(weights).__name__}")
    expected = canonical_shapes(model_config)
    missing = [k for k in expected if k not in weights]
    extra = sorted(k for k in weights if k not in expected)
    m = model_config
    if missing or extra:
        raise ValueError(
            f"{where}: weight names do not match the network for N={m.N}, gridsize={m.gridsize}, "
            f"probe_big={m.probe_big}, decoder={getattr(m, 'decoder', 'reference')!r}, "
            f"per_pattern={getattr(m, 'per_pattern', False)}: "
            f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected {extra[:6]}{'...' if len(extra) > 6 else ''}")
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        arr = np.asarray(weights[name])
        if arr.shape != shape:
            raise ValueError(f"{where}: {name!r} must have shape {shape}, got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{where}: {name!r} must be a floating-point array, got {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}: {name!r} contains NaN or Inf")
        out[name] = arr
    return out


# ------------------------------------------------------------------------------ bundles
def _precision(config) -> str:
    """Precision the target model is built with: float64 weights only for precision "64"."""
    return PRECISION_64 if config.execution.precision == PRECISION_64 else "32"


def read_bundle_weights(bundle) -> dict[str, np.ndarray]:
    """Canonical weights of a loaded bundle (``ptycho.bundle.LoadedBundle``).

    The bundle's own backend rebuilds its model from the bundle's config, probe and scales and
    loads the weights file (verified against the manifest by ``load_bundle``); the model's
    weights are then exported. The weights keep the dtype they were stored with.
    """
    if bundle.backend == "tf":
        from ptycho import tf_weights
        from ptycho.workflow import load_model

        return tf_weights.export_weights(load_model(bundle, precision=_precision(bundle.config)))
    if bundle.backend == "torch":
        import torch

        from ptycho_torch import weights as torch_weights
        from ptycho_torch.inference import load_model

        model = load_model(bundle)
        state = torch.load(bundle.weights_path, map_location="cpu", weights_only=True)
        if _precision(bundle.config) == PRECISION_64 or any(
                isinstance(v, torch.Tensor) and v.dtype == torch.float64 for v in state.values()):
            # load_model builds float32; keep float64 weights exactly as stored.
            model = model.double()
            model.load_state_dict(state, strict=True)
        return torch_weights.export_weights(model)
    raise ValueError(f"{bundle.weights_path.parent}: unknown backend {bundle.backend!r}")


def _tf_writer(bundle, weights: Mapping[str, np.ndarray]):
    from ptycho import tf_weights
    from ptycho.model import build_model
    from ptycho.workflow import WEIGHTS_FILENAME

    dtypes = {np.asarray(w).dtype for w in weights.values()}
    precision = PRECISION_64 if np.dtype(np.float64) in dtypes else _precision(bundle.config)
    model = build_model(bundle.config.model, bundle.probe, bundle.intensity_scale,
                        bundle.normalization_factor, precision=precision)
    tf_weights.import_weights(model, weights)
    return (lambda path: model.save_weights(str(path))), WEIGHTS_FILENAME


def _torch_writer(bundle, weights: Mapping[str, np.ndarray]):
    from ptycho_torch import weights as torch_weights
    from ptycho_torch.model import PtychoPINN
    from ptycho_torch.workflows.components import WEIGHTS_FILENAME, save_state_dict

    model = PtychoPINN(bundle.config.model, bundle.probe, intensity_scale=bundle.intensity_scale,
                       normalization_factor=bundle.normalization_factor)
    if any(np.asarray(w).dtype == np.float64 for w in weights.values()):
        model = model.double()
    torch_weights.import_weights(model, weights)
    return (lambda path: save_state_dict(model, path)), WEIGHTS_FILENAME


def convert_bundle(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, to: str) -> Path:
    """Convert the bundle in ``src_dir`` to backend ``to`` and write it to ``dst_dir``.

    ``to``: ``"torch"``/``"pytorch"`` or ``"tf"``/``"tensorflow"``. ``src_dir`` may be a bundle
    or a training output directory holding ``model/``. The new bundle has the source's config,
    probe, trained intensity scale, normalisation factor and data statistics, provenance,
    overrides and history summary (all through ``ptycho.bundle.write_bundle``, atomically), and
    its manifest records ``converted_from``: ``{backend, bundle_dir, weights_file,
    weights_sha256, created, package_version}`` of the source. Returns ``dst_dir``.

    Raises ``ValueError`` (``BundleError`` for bundle problems) when the source already is a
    ``to`` bundle, when ``dst_dir`` is the source directory, or when the weights do not fit.
    """
    from ptycho.atomic import atomic_write_json
    from ptycho.bundle import MANIFEST_NAME, BundleError, load_bundle, read_manifest, write_bundle

    target = normalize_backend(to)
    src = resolve_bundle_dir(src_dir)
    dst = Path(dst_dir)
    if dst.resolve() == src.resolve() or dst.resolve() == Path(src_dir).resolve():
        raise BundleError(f"output directory {dst} is the source bundle; choose another one")
    bundle = load_bundle(src)
    if bundle.backend == target:
        raise BundleError(f"{src} already is a {target!r} bundle; nothing to convert")
    weights = check_canonical(read_bundle_weights(bundle), bundle.config.model,
                              where=str(bundle.weights_path))
    writer, filename = (_tf_writer if target == "tf" else _torch_writer)(bundle, weights)
    m = bundle.manifest
    out = write_bundle(dst, backend=target, payload=bundle.training_payload(),
                       write_weights=writer, weights_filename=filename,
                       intensity_scale=bundle.intensity_scale,
                       history_summary=m.get("history_summary") or {})
    manifest = read_manifest(out)
    manifest[CONVERTED_FROM_KEY] = {
        "backend": bundle.backend, "bundle_dir": str(src.resolve()),
        "weights_file": m.get("weights_file"), "weights_sha256": m.get("weights_sha256"),
        "created": m.get("created"), "package_version": m.get("package_version")}
    atomic_write_json(out / MANIFEST_NAME, manifest)
    return out


# ------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ptycho.convert`` / ``ptycho-convert``."""
    parser = argparse.ArgumentParser(
        prog="ptycho-convert",
        description="Convert a trained model bundle between the TensorFlow and PyTorch "
                    "backends (same network, weights copied exactly; the manifest records "
                    "converted_from).")
    parser.add_argument("--to", required=True, type=str.lower,
                        choices=sorted(BACKEND_ALIASES),
                        help="Target backend: torch/pytorch or tf/tensorflow. Default: none "
                             "(required).")
    parser.add_argument("model_dir", metavar="MODEL_DIR",
                        help="Source bundle directory (or training output directory holding "
                             "model/).")
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="Directory to write the converted bundle to (an existing bundle "
                             "there is replaced atomically).")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns 0 on success, 2 for invalid input (the message names the culprit)."""
    args = build_parser().parse_args(argv)
    try:
        out = convert_bundle(args.model_dir, args.out_dir, args.to)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ptycho-convert: wrote {normalize_backend(args.to)} bundle {out} from "
          f"{args.model_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
