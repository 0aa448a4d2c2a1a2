"""The frozen objects handed to a backend: data statistics, training and inference payloads.

A :class:`TrainingPayload` is everything a training run needs besides the arrays themselves:
the resolved config, the statistics derived from the training data (input normalisation and
intensity scale), the probe, the overrides that produced the config and the provenance (path and
sha256) of the data files. It is built once, given to either backend and written into the model
bundle. Each payload round-trips exactly through JSON (the probe as real/imag lists).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from ptycho import physics
from ptycho.atomic import sha256_file
from ptycho.config import ConfigError, DataConfig, PtychoConfig, from_dict, to_dict
from ptycho.config_bridge import Override, resolve_config

__all__ = [
    "PAYLOAD_JSON_VERSION",
    "DataStatistics",
    "TrainingPayload",
    "InferencePayload",
    "build_training_payload",
    "file_provenance",
    "probe_to_json",
    "probe_from_json",
    "resolve_inference_payload",
]

PAYLOAD_JSON_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _positive_finite(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    if not (math.isfinite(out) and out > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return out


@dataclass(frozen=True)
class DataStatistics:
    """Scale factors derived from one training data set (all positive finite floats).

    ``mean_photons``: mean over patterns of total counts per pattern (photons).
    ``intensity_scale``: ``s = sqrt(mean_photons) / (N/2)``; network amplitudes -> counts via
    ``lam = (s * A)**2``. ``normalization_factor``: ``f = sqrt(mean sum amp**2) / (N/2)``; the
    network input is ``amp / f``. ``N``: pattern side in pixels.
    """

    intensity_scale: float
    normalization_factor: float
    mean_photons: float
    N: int

    def __post_init__(self) -> None:
        for name in ("intensity_scale", "normalization_factor", "mean_photons"):
            object.__setattr__(self, name, _positive_finite(name, getattr(self, name)))
        n = self.N
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"N must be a positive integer, got {n!r}")
        object.__setattr__(self, "N", int(n))

    @classmethod
    def from_amplitudes(cls, diff: np.ndarray, nphotons: Optional[float] = None) -> "DataStatistics":
        """Statistics of diffraction amplitudes ``diff`` (M, N, N), real >= 0, finite.

        Mean photons is the float64 mean over patterns of ``sum(diff**2)``; when ``nphotons`` is
        given (the file holds already-normalised amplitudes) it is used as the mean photons
        instead, while the normalisation factor still comes from ``diff``.
        """
        arr = np.asarray(diff)
        if arr.ndim != 3:
            raise ValueError(f"diffraction amplitudes must have shape (M, N, N), got {arr.shape}")
        N = int(arr.shape[-1])
        measured = physics.mean_photons(arr)
        factor = physics.normalization_factor(arr)
        if nphotons is None:
            photons = measured
        else:
            photons = _positive_finite("nphotons", nphotons)
        return cls(intensity_scale=physics.intensity_scale(photons, N),
                   normalization_factor=factor, mean_photons=photons, N=N)

    def to_dict(self) -> dict[str, Any]:
        return {"intensity_scale": self.intensity_scale,
                "normalization_factor": self.normalization_factor,
                "mean_photons": self.mean_photons, "N": self.N}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataStatistics":
        missing = [k for k in ("intensity_scale", "normalization_factor", "mean_photons", "N")
                   if k not in d]
        if missing:
            raise ValueError(f"data statistics lack {', '.join(missing)}")
        return cls(intensity_scale=d["intensity_scale"],
                   normalization_factor=d["normalization_factor"],
                   mean_photons=d["mean_photons"], N=d["N"])


def probe_to_json(probe: np.ndarray) -> dict[str, list]:
    """``{"real": [[...]], "imag": [[...]]}`` of a complex64 probe (exact for float32 parts)."""
    p = np.asarray(probe, dtype=np.complex64)
    return {"real": p.real.tolist(), "imag": p.imag.tolist()}


def probe_from_json(d: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`probe_to_json`; returns a complex64 array."""
    try:
        real = np.asarray(d["real"], dtype=np.float32)
        imag = np.asarray(d["imag"], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"probe must be {{'real': [[...]], 'imag': [[...]]}}: {exc}") from None
    if real.shape != imag.shape:
        raise ValueError(f"probe real part {real.shape} and imaginary part {imag.shape} differ")
    out = np.empty(real.shape, dtype=np.complex64)
    out.real = real
    out.imag = imag
    return out


def _check_probe(probe: Any, N: int) -> np.ndarray:
    p = np.asarray(probe)
    if p.shape != (N, N):
        raise ValueError(f"probe must have shape ({N}, {N}) to match model.N, got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probe contains NaN or Inf")
    p = np.array(p, dtype=np.complex64, copy=True)
    p.setflags(write=False)
    return p


def _check_overrides(overrides: Iterable[Any]) -> tuple[Override, ...]:
    out = []
    for o in overrides:
        if isinstance(o, Override):
            out.append(o)
        elif isinstance(o, Mapping):
            out.append(Override.from_dict(o))
        else:
            raise TypeError(f"overrides must be Override records, got {type(o).__name__}")
    return tuple(out)


def _check_provenance(provenance: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in provenance:
        try:
            path, digest = item
        except (TypeError, ValueError):
            raise ValueError(f"provenance entries must be (path, sha256) pairs, got {item!r}") from None
        path = os.fspath(path)
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ValueError(f"provenance sha256 for {path} must be 64 lowercase hex digits, "
                             f"got {digest!r}")
        out.append((path, digest))
    return tuple(out)


def file_provenance(paths: Iterable[str | os.PathLike]) -> tuple[tuple[str, str], ...]:
    """``((path, sha256), ...)`` for the given files (None entries skipped)."""
    return tuple((os.fspath(p), sha256_file(p)) for p in paths if p is not None)


def _check_kind(d: Any, kind: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{kind} JSON must be an object, got {type(d).__name__}")
    if d.get("kind") != kind:
        raise ValueError(f"expected a {kind} JSON object, got kind {d.get('kind')!r}")
    if d.get("version") != PAYLOAD_JSON_VERSION:
        raise ValueError(f"{kind} JSON version {d.get('version')!r} is not supported "
                         f"(this library reads version {PAYLOAD_JSON_VERSION})")
    return d


@dataclass(frozen=True, eq=False)
class TrainingPayload:
    """Everything a training run needs besides the arrays; frozen, JSON round trip.

    ``probe``: (N, N) complex64 probe estimate (read-only copy). ``overrides``: the
    :class:`~ptycho.config_bridge.Override` records that produced ``config``. ``provenance``:
    ``((path, sha256), ...)`` of the data files. ``stats.N`` must equal ``config.model.N``.
    """

    config: PtychoConfig
    stats: DataStatistics
    probe: np.ndarray
    overrides: tuple = ()
    provenance: tuple = ()

    def __post_init__(self) -> None:
        if not isinstance(self.config, PtychoConfig):
            raise TypeError(f"config must be a PtychoConfig, got {type(self.config).__name__}")
        if not isinstance(self.stats, DataStatistics):
            raise TypeError(f"stats must be DataStatistics, got {type(self.stats).__name__}")
        N = self.config.model.N
        if self.stats.N != N:
            raise ValueError(f"data statistics are for N={self.stats.N} but model.N={N}")
        object.__setattr__(self, "probe", _check_probe(self.probe, N))
        object.__setattr__(self, "overrides", _check_overrides(self.overrides))
        object.__setattr__(self, "provenance", _check_provenance(self.provenance))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrainingPayload):
            return NotImplemented
        return (self.config == other.config and self.stats == other.stats
                and self.probe.shape == other.probe.shape
                and bool(np.array_equal(self.probe, other.probe))
                and self.overrides == other.overrides and self.provenance == other.provenance)

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plain Python types)."""
        return {
            "kind": "TrainingPayload",
            "version": PAYLOAD_JSON_VERSION,
            "config": to_dict(self.config),
            "stats": self.stats.to_dict(),
            "probe": probe_to_json(self.probe),
            "overrides": [o.to_dict() for o in self.overrides],
            "provenance": [{"path": p, "sha256": h} for p, h in self.provenance],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainingPayload":
        d = _check_kind(d, "TrainingPayload")
        return cls(config=from_dict(d["config"]), stats=DataStatistics.from_dict(d["stats"]),
                   probe=probe_from_json(d["probe"]),
                   overrides=tuple(Override.from_dict(o) for o in d.get("overrides", ())),
                   provenance=tuple((p["path"], p["sha256"]) for p in d.get("provenance", ())))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "TrainingPayload":
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class InferencePayload:
    """What an inference run needs: the resolved config, the bundle directory, the overrides."""

    config: PtychoConfig
    bundle_dir: str
    overrides: tuple = ()

    def __post_init__(self) -> None:
        if not isinstance(self.config, PtychoConfig):
            raise TypeError(f"config must be a PtychoConfig, got {type(self.config).__name__}")
        if not isinstance(self.bundle_dir, (str, os.PathLike)) or not os.fspath(self.bundle_dir):
            raise ValueError(f"bundle_dir must be a non-empty path, got {self.bundle_dir!r}")
        object.__setattr__(self, "bundle_dir", os.fspath(self.bundle_dir))
        object.__setattr__(self, "overrides", _check_overrides(self.overrides))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "InferencePayload", "version": PAYLOAD_JSON_VERSION,
                "config": to_dict(self.config), "bundle_dir": self.bundle_dir,
                "overrides": [o.to_dict() for o in self.overrides]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "InferencePayload":
        d = _check_kind(d, "InferencePayload")
        return cls(config=from_dict(d["config"]), bundle_dir=d["bundle_dir"],
                   overrides=tuple(Override.from_dict(o) for o in d.get("overrides", ())))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "InferencePayload":
        return cls.from_dict(json.loads(text))


def build_training_payload(cli_overrides: Optional[Mapping[str, Any]] = None,
                           config_path: Optional[str] = None):
    """Resolve the config (defaults < ``config_path`` < CLI), read the scans and build the run's
    :class:`TrainingPayload`; both backends' training CLIs start here.

    Returns ``(payload, train_data, test_data)`` (the scans are read once; ``test_data`` is
    ``None`` without a test file). When neither the flags nor the file set ``model.N`` it is
    taken from the training data (recorded as an override with source ``"data"``); an explicit
    N that differs from the data is an error. Statistics come from the training file's
    amplitudes (``data.nphotons`` replaces the measured mean photons when given). Raises
    ``ConfigError`` without a training file and ``DataContractError`` for a bad file.
    """
    from ptycho.data.contract import load_npz

    config, overrides = resolve_config(cli_overrides or {}, yaml_path=config_path,
                                       context="training")
    if config.data.train_data_file is None:
        raise ConfigError("data.train_data_file: required; give --train_data_file or set it in "
                          "the --config file")
    train = load_npz(config.data.train_data_file)
    test = load_npz(config.data.test_data_file) if config.data.test_data_file else None
    if not any(o.key == "model.N" and o.source in ("cli", "yaml") for o in overrides) \
            and train.N != config.model.N:
        old = config.model.N
        try:
            config = replace(config, model=replace(config.model, N=train.N))
        except ConfigError as exc:
            raise ConfigError(f"{train.source} holds {train.N}x{train.N} patterns, a size the "
                              f"network does not support ({exc}); crop or bin the patterns "
                              "(and the probe) to a supported N") from exc
        overrides = tuple(overrides) + (Override("data", "model.N", old, train.N,
                                                 origin=str(config.data.train_data_file)),)
    if train.N != config.model.N:
        raise ConfigError(f"model.N: got {config.model.N} but {train.source} holds "
                          f"{train.N}x{train.N} patterns; pass --N {train.N} or leave --N out")
    if test is not None and test.N != train.N:
        raise ConfigError(f"{test.source} holds {test.N}x{test.N} patterns but the training "
                          f"data {train.source} holds {train.N}x{train.N}; training and "
                          "validation scans must have the same pattern size")
    stats = DataStatistics.from_amplitudes(train.diffraction, nphotons=config.data.nphotons)
    provenance = file_provenance([config.data.train_data_file, config.data.test_data_file])
    payload = TrainingPayload(config=config, stats=stats, probe=train.probe,
                              overrides=overrides, provenance=provenance)
    return payload, train, test


# The inference CLI of each backend (bundle ``backend`` value) and ptycho-convert's name for it.
_INFERENCE_CLI = {"tf": ("TensorFlow", "python -m ptycho.inference", "tensorflow"),
                  "torch": ("PyTorch", "python -m ptycho_torch.inference", "torch")}


def resolve_inference_payload(cli_overrides: Optional[Mapping[str, Any]] = None,
                              config_path: Optional[str] = None, *, backend: str):
    """Flags + config file -> ``(InferencePayload, LoadedBundle)`` for ``backend`` (``"tf"``
    or ``"torch"``); both backends' inference CLIs start here.

    Precedence: defaults < the bundle's model settings, K and grouping seed < config file <
    flags. The bundle is loaded and verified (a bundle without a valid intensity scale is
    refused by ``ptycho.bundle.load_bundle``); a bundle of the other backend, and model
    settings other than the bundle's (the weights fix them), are refused with ``ConfigError``;
    only ``model.projection_steps``, which has no weights, may differ (the returned bundle then
    carries it).
    """
    from ptycho.bundle import load_bundle, resolve_bundle_dir     # bundle imports this module

    first, _ = resolve_config(cli_overrides or {}, yaml_path=config_path, context="inference")
    if first.inference.model_path is None:
        raise ConfigError("inference.model_path: required; give --model_path")
    if first.inference.test_data is None:
        raise ConfigError("inference.test_data: required; give --test_data")
    bundle = load_bundle(resolve_bundle_dir(first.inference.model_path))
    if bundle.backend != backend:
        where = bundle.weights_path.parent
        name, _, convert_to = _INFERENCE_CLI[backend]
        other = _INFERENCE_CLI[bundle.backend][1]
        raise ConfigError(f"{where}: a {bundle.backend!r} bundle cannot be loaded by the {name} "
                          f"backend; use {other}, ptycho-infer (either backend's bundle), or "
                          f"convert it: ptycho-convert --to {convert_to} {where} NEW_DIR")
    trained = bundle.config
    base = PtychoConfig(model=trained.model, data=DataConfig(K=trained.data.K,
                                                             seed=trained.data.seed))
    config, overrides = resolve_config(cli_overrides or {}, yaml_path=config_path, base=base,
                                       context="inference")
    # Projections carry no weights: their number may change at inference.
    steps = config.model.projection_steps
    if replace(config.model, projection_steps=trained.model.projection_steps) != trained.model:
        raise ConfigError(f"model settings are fixed by the bundle ({trained.model}); the "
                          f"config asks for {config.model}")
    if steps != trained.model.projection_steps:
        bundle = replace(bundle, config=replace(trained, model=config.model))
    payload = InferencePayload(config=config, bundle_dir=str(bundle.weights_path.parent),
                               overrides=overrides)
    return payload, bundle
