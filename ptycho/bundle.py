"""Backend-neutral model bundle: a directory holding the trained model and everything to reuse it.

Layout of a bundle directory::

    manifest.json      format version, backend, package version, config, scales, file checksums,
                       data provenance, overrides, training history summary, creation time
    <weights file>     written by the backend (Keras ``.weights.h5`` or a torch ``state_dict``)
    probe.npy          (N, N) complex64 probe used by the model

Writing is atomic at the directory level: everything goes into a temporary directory beside the
target, is fsynced, and is then renamed into place. An existing bundle is moved aside only once
the new one is complete, and deleted only after the new one is in place, so an interrupted write
leaves the previous bundle usable. Loading verifies the format version and the sha256 of every
file, refuses a missing or invalid intensity scale, and never unpickles.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ptycho import __version__
from ptycho.atomic import (atomic_save_npy, atomic_write_json, current_umask, fsync_dir,
                           sha256_file)
from ptycho.config import ConfigError, PtychoConfig, from_dict, to_dict
from ptycho.config_bridge import Override
from ptycho.payload import DataStatistics, TrainingPayload

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "BACKENDS",
    "MANIFEST_NAME",
    "PROBE_NAME",
    "BundleError",
    "LoadedBundle",
    "write_bundle",
    "load_bundle",
    "read_manifest",
    "resolve_bundle_dir",
    "BUNDLE_DIRNAME",
]

BUNDLE_FORMAT_VERSION = 1
BACKENDS = ("tf", "torch")
MANIFEST_NAME = "manifest.json"
PROBE_NAME = "probe.npy"
BUNDLE_DIRNAME = "model"     # the bundle's directory inside a training output directory


class BundleError(ValueError):
    """A bundle cannot be written or loaded; the message names the directory or file at fault."""


def _jsonable(value: Any, where: str) -> Any:
    """Plain-JSON copy of a history summary: numpy values unwrapped, non-finite floats as strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise BundleError(f"{where}: value {value!r} of type {type(value).__name__} cannot be stored "
                      "in the manifest (use numbers, strings, lists and dicts)")


def _check_filename(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name \
            or "\\" in name or os.sep in name:
        raise BundleError(f"{what} must be a plain file name inside the bundle, got {name!r}")
    return name


def _check_scale(value: Any, name: str, where: str) -> float:
    if value is None:
        raise BundleError(f"{where}: {name} is missing; refusing to use the bundle (there is no "
                          "safe default for it)")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BundleError(f"{where}: {name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise BundleError(f"{where}: {name} must be finite and > 0, got {value!r}")
    return out


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_bundle(out_dir: str | os.PathLike, *, backend: str, payload: TrainingPayload,
                 write_weights: Callable[[Path], None], weights_filename: str,
                 intensity_scale: float, history_summary: Mapping[str, Any]) -> Path:
    """Write a complete bundle to ``out_dir`` atomically and return its path.

    ``write_weights(path)`` must write the backend's weights to ``path`` (inside a temporary
    directory). ``intensity_scale`` is the trained value (after training, not the initial one).
    ``history_summary`` is a small JSON-like dict (final losses, epochs run, ...); non-finite
    floats are stored as the strings ``"nan"``/``"inf"``/``"-inf"``.

    An existing ``out_dir`` is replaced only if it is an earlier bundle (it holds
    ``manifest.json``) or empty; anything else is refused so unrelated files are never deleted.
    If ``write_weights`` or any later step raises, the temporary directory is removed and the
    previous bundle is left untouched.
    """
    out = Path(out_dir)
    if backend not in BACKENDS:
        raise BundleError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not isinstance(payload, TrainingPayload):
        raise BundleError(f"payload must be a TrainingPayload, got {type(payload).__name__}")
    weights_filename = _check_filename(weights_filename, "weights_filename")
    if weights_filename in (MANIFEST_NAME, PROBE_NAME):
        raise BundleError(f"weights_filename {weights_filename!r} clashes with a reserved bundle file")
    scale = _check_scale(intensity_scale, "intensity_scale", "write_bundle")
    history = _jsonable(dict(history_summary), "history_summary")
    if out.exists():
        if not out.is_dir():
            raise BundleError(f"{out} exists and is not a directory; refusing to replace it")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise BundleError(f"{out} is a non-empty directory without {MANIFEST_NAME}; refusing "
                              "to replace something that is not a bundle")
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())    # mkdtemp's 0700 would hide a shared bundle
        weights_path = tmp / weights_filename
        write_weights(weights_path)
        if not weights_path.is_file():
            raise BundleError(f"write_weights did not create the weights file {weights_filename!r}")
        _fsync_file(weights_path)
        atomic_save_npy(tmp / PROBE_NAME, payload.probe)
        config = payload.config
        stats = payload.stats
        manifest = {
            "format_version": BUNDLE_FORMAT_VERSION,
            "backend": backend,
            "package_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": to_dict(config),
            "intensity_scale": scale,
            "data_intensity_scale": stats.intensity_scale,
            "normalization_factor": stats.normalization_factor,
            "mean_photons": stats.mean_photons,
            "N": config.model.N,
            "gridsize": config.model.gridsize,
            "probe_file": PROBE_NAME,
            "probe_sha256": sha256_file(tmp / PROBE_NAME),
            "weights_file": weights_filename,
            "weights_sha256": sha256_file(weights_path),
            "provenance": [{"path": p, "sha256": h} for p, h in payload.provenance],
            "overrides": [o.to_dict() for o in payload.overrides],
            "history_summary": history,
        }
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        fsync_dir(tmp)
        if out.exists():
            aside = parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(out, aside)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(aside, out)
                raise
            fsync_dir(parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(tmp, out)
            fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass(frozen=True, eq=False)
class LoadedBundle:
    """A verified bundle. ``probe`` (N, N) complex64; ``weights_path`` points inside the bundle."""

    manifest: dict
    config: PtychoConfig
    backend: str
    intensity_scale: float
    normalization_factor: float
    probe: np.ndarray
    weights_path: Path

    @property
    def stats(self) -> DataStatistics:
        """Statistics of the training data recorded at training time."""
        m = self.manifest
        return DataStatistics(intensity_scale=m["data_intensity_scale"],
                              normalization_factor=m["normalization_factor"],
                              mean_photons=m["mean_photons"], N=m["N"])

    @property
    def overrides(self) -> tuple[Override, ...]:
        return tuple(Override.from_dict(o) for o in self.manifest.get("overrides", ()))

    def training_payload(self) -> TrainingPayload:
        """The payload the bundle was trained from (config, data statistics, probe, provenance)."""
        prov = tuple((p["path"], p["sha256"]) for p in self.manifest.get("provenance", ()))
        return TrainingPayload(config=self.config, stats=self.stats, probe=self.probe,
                               overrides=self.overrides, provenance=prov)


def resolve_bundle_dir(model_path: str | os.PathLike) -> Path:
    """``model_path`` when it holds a manifest, else ``model_path/model`` (a training output
    directory); ``BundleError`` when neither does."""
    p = Path(model_path)
    if (p / MANIFEST_NAME).is_file():
        return p
    if (p / BUNDLE_DIRNAME / MANIFEST_NAME).is_file():
        return p / BUNDLE_DIRNAME
    raise BundleError(f"{p}: no {MANIFEST_NAME} here or in {p / BUNDLE_DIRNAME}; --model_path "
                      "must be a model bundle directory (or a training output directory)")


def read_manifest(bundle_dir: str | os.PathLike) -> dict:
    """The parsed ``manifest.json`` of a bundle (no checks beyond being a JSON object)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not Path(bundle_dir).is_dir():
        raise BundleError(f"bundle directory not found: {bundle_dir}")
    if not path.is_file():
        raise BundleError(f"{path} not found; {bundle_dir} is not a model bundle")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def _verified_file(bundle: Path, manifest: dict, name_key: str, sha_key: str) -> Path:
    where = bundle / MANIFEST_NAME
    name = _check_filename(manifest.get(name_key), f"{where}: {name_key}")
    path = bundle / name
    if not path.is_file():
        raise BundleError(f"{path} is missing from the bundle")
    expected = manifest.get(sha_key)
    actual = sha256_file(path)
    if expected != actual:
        raise BundleError(f"{path}: sha256 mismatch (manifest {expected}, file {actual}); the file "
                          "was modified or corrupted")
    return path


def load_bundle(bundle_dir: str | os.PathLike) -> LoadedBundle:
    """Load and verify a bundle written by :func:`write_bundle`.

    Raises :class:`BundleError` for a missing or unreadable manifest, another format version, an
    unknown backend, a missing, non-finite or non-positive intensity scale or normalisation
    factor, an invalid config, a missing file or a sha256 mismatch.
    """
    bundle = Path(bundle_dir)
    manifest = read_manifest(bundle)
    where = bundle / MANIFEST_NAME
    version = manifest.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {version!r} is not supported (this library "
                          f"reads version {BUNDLE_FORMAT_VERSION})")
    backend = manifest.get("backend")
    if backend not in BACKENDS:
        raise BundleError(f"{where}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    scale = _check_scale(manifest.get("intensity_scale"), "intensity_scale", str(where))
    factor = _check_scale(manifest.get("normalization_factor"), "normalization_factor", str(where))
    try:
        config = from_dict(manifest.get("config") or {})
    except ConfigError as exc:
        raise BundleError(f"{where}: invalid config: {exc}") from None
    weights_path = _verified_file(bundle, manifest, "weights_file", "weights_sha256")
    probe_path = _verified_file(bundle, manifest, "probe_file", "probe_sha256")
    try:
        probe = np.load(probe_path, allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"{probe_path}: cannot read probe: {exc}") from None
    N = config.model.N
    if probe.shape != (N, N) or not np.all(np.isfinite(probe)):
        raise BundleError(f"{probe_path}: probe must be a finite ({N}, {N}) array, got shape "
                          f"{probe.shape}")
    probe = probe.astype(np.complex64)
    probe.setflags(write=False)
    return LoadedBundle(manifest=manifest, config=config, backend=backend, intensity_scale=scale,
                        normalization_factor=factor, probe=probe, weights_path=weights_path)
