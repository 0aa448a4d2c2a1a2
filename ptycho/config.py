"""Canonical run configuration: frozen, validated dataclasses shared by both backends.

A run is described by one :class:`PtychoConfig` holding five sections (model, data, training,
inference, execution). Every value is checked on construction; a bad value raises
:class:`ConfigError` naming the field, the value given and what is allowed. Loading from a dict,
JSON or YAML file rejects unknown sections and keys by name and lists the valid ones.

Legacy field names, flat keys and CLI flags are translated to this canonical form by
:mod:`ptycho.config_bridge`; this module only knows the canonical nested form
``{"model": {...}, "data": {...}, "training": {...}, "inference": {...}, "execution": {...}}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ptycho.architecture import DECODERS, FILTER_SCALE_RANGE, check_filter_scale
from ptycho.atomic import atomic_write_text
from ptycho.lr_schedule import LR_SCHEDULES

__all__ = [
    "ConfigError",
    "ModelConfig",
    "DataConfig",
    "TrainingConfig",
    "InferenceConfig",
    "ExecutionConfig",
    "PtychoConfig",
    "SECTIONS",
    "from_dict",
    "to_dict",
    "load_config",
    "save_config",
    "with_overrides",
    "valid_keys",
    "coerce_field",
    "read_config_file",
    "model_config_differences",
    "check_same_model_config",
]

VALID_N = (32, 64, 128, 256)
AMP_ACTIVATIONS = ("sigmoid", "softplus", "swish")
MODES = ("unsupervised", "supervised")
INTERPOLATIONS = ("bilinear", "fourier")
STITCH_WEIGHTINGS = ("probe", "uniform")
ACCELERATORS = ("auto", "cpu", "gpu")
PRECISIONS = ("32", "16-mixed", "bf16-mixed", "64")
LOGGERS = ("none", "csv", "tensorboard")


class ConfigError(ValueError):
    """A configuration value, key or file is invalid; the message names it and what is allowed."""


# --------------------------------------------------------------------------- type coercion

def _is_int_like(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coerce_one(section: str, name: str, value: Any, tp: Any, int_as_str: bool) -> Any:
    """Return ``value`` converted to the field type ``tp`` or raise ConfigError.

    Accepted conversions are only the lossless, unsurprising ones: ints for float fields,
    integral floats and integer strings for int fields, numeric strings for float fields (YAML 1.1
    reads ``1e-3`` as a string), path objects for string fields, and ints for the string fields
    that hold numbers (``devices``, ``precision``). Booleans never pass as numbers and strings
    never pass as booleans.
    """
    where = f"{section}.{name}"
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        tp = args[0]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if type(value).__name__ == "bool_":  # numpy.bool_
            return bool(value)
        raise ConfigError(f"{where}: expected true or false, got {value!r} ({type(value).__name__})")
    if tp is int:
        if _is_int_like(value):
            return int(value)
        if hasattr(value, "dtype") and getattr(value, "shape", None) == () and value.dtype.kind in "iu":
            return int(value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r} ({type(value).__name__})")
    if tp is float:
        out: Optional[float] = None
        if isinstance(value, bool):
            out = None
        elif isinstance(value, (int, float)):
            out = float(value)
        elif hasattr(value, "dtype") and getattr(value, "shape", None) == () and value.dtype.kind in "iuf":
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                out = None
        if out is None:
            raise ConfigError(f"{where}: expected a number, got {value!r} ({type(value).__name__})")
        if not math.isfinite(out):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if int_as_str and _is_int_like(value):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r} ({type(value).__name__})")
    raise TypeError(f"unsupported field type {tp!r} for {where}")


def _coerce_fields(obj: Any, section: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        raw = getattr(obj, f.name)
        val = _coerce_one(section, f.name, raw, hints[f.name], f.metadata.get("int_as_str", False))
        object.__setattr__(obj, f.name, val)


def _fail(section: str, name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{section}.{name}: got {value!r}; allowed: {allowed}")


def _check_choice(section: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise _fail(section, name, value, " | ".join(repr(c) for c in choices))


def _check_min(section: str, name: str, value: Any, lo: float, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value < lo:
        raise _fail(section, name, value, f"an integer >= {lo}" + (" or null" if optional else ""))


def _check_positive(section: str, name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not value > 0:
        raise _fail(section, name, value, "a number > 0" + (" or null" if optional else ""))


def _check_nonempty(section: str, name: str, value: Optional[str], *, optional: bool) -> None:
    if value is None and optional:
        return
    if value is None or not value.strip():
        raise _fail(section, name, value, "a non-empty path" + (" or null" if optional else ""))


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class ModelConfig:
    """Network and physics-model settings.

    ``N`` is the diffraction pattern / object patch side in pixels; ``gridsize`` g gives
    ``C = g**2`` patterns per group. ``group_pad`` is the per-group canvas padding in pixels used
    by the overlap constraint (None means ``N // 2``). ``filter_scale`` multiplies the network's
    filter counts (``ptycho.architecture``; 1 is the reference network). ``decoder`` picks the
    decoder: ``"reference"`` (DESIGN §5) or ``"unet"`` (full resolution with skip connections;
    ``ptycho.architecture``). ``per_pattern`` runs the network on each pattern of a group alone
    (one input and one output plane, the same weights for every member), so that only the
    overlap constraint couples the members; without it the ``C`` patterns of a group are the
    ``C`` input planes of one network with ``C`` output planes per head.
    ``projection_steps`` K > 0 follows the overlap constraint by K error-reduction projections of
    each group's object onto its C measured amplitudes (``ptycho.projection``; any gridsize,
    no weights of its own); 0 is the network of DESIGN §5.
    """

    N: int = 64
    gridsize: int = 1
    amp_activation: str = "softplus"
    probe_big: bool = True
    probe_mask: bool = False
    probe_trainable: bool = False
    intensity_scale_trainable: bool = False
    mode: str = "unsupervised"
    interpolation: str = "bilinear"
    group_pad: Optional[int] = None
    filter_scale: float = 1.0
    decoder: str = "reference"
    per_pattern: bool = False
    projection_steps: int = 0

    def __post_init__(self) -> None:
        s = "model"
        _coerce_fields(self, s)
        _check_choice(s, "N", self.N, VALID_N)
        _check_min(s, "gridsize", self.gridsize, 1)
        _check_choice(s, "amp_activation", self.amp_activation, AMP_ACTIVATIONS)
        _check_choice(s, "mode", self.mode, MODES)
        _check_choice(s, "interpolation", self.interpolation, INTERPOLATIONS)
        _check_choice(s, "decoder", self.decoder, DECODERS)
        _check_min(s, "group_pad", self.group_pad, 0, optional=True)
        _check_min(s, "projection_steps", self.projection_steps, 0)
        try:
            check_filter_scale(self.filter_scale)
        except ValueError:
            lo, hi = FILTER_SCALE_RANGE
            raise _fail(s, "filter_scale", self.filter_scale,
                        f"a number in [{lo:g}, {hi:g}]") from None

    @property
    def resolved_group_pad(self) -> int:
        """Per-group canvas padding in pixels: ``group_pad`` or ``N // 2`` when unset."""
        return self.N // 2 if self.group_pad is None else self.group_pad

    @property
    def channels(self) -> int:
        """Patterns per group, ``C = gridsize**2``."""
        return self.gridsize ** 2

    @property
    def network_channels(self) -> int:
        """Input planes of the network and output planes of each head: 1 with ``per_pattern``,
        else ``C``."""
        return 1 if self.per_pattern else self.channels


@dataclass(frozen=True)
class DataConfig:
    """Input data and grouping settings.

    ``n_groups`` None means every group (for gridsize 1: every pattern). ``K`` is the number of
    nearest neighbours a group is drawn from. ``nphotons`` (mean photons per pattern) is needed
    only when the file holds already-normalised amplitudes. ``seed`` seeds the grouping RNG.
    """

    train_data_file: Optional[str] = None
    test_data_file: Optional[str] = None
    n_groups: Optional[int] = None
    K: int = 6
    nphotons: Optional[float] = None
    seed: int = 0

    def __post_init__(self) -> None:
        s = "data"
        _coerce_fields(self, s)
        _check_nonempty(s, "train_data_file", self.train_data_file, optional=True)
        _check_nonempty(s, "test_data_file", self.test_data_file, optional=True)
        _check_min(s, "n_groups", self.n_groups, 1, optional=True)
        _check_min(s, "K", self.K, 1)
        _check_positive(s, "nphotons", self.nphotons, optional=True)
        _check_min(s, "seed", self.seed, 0)


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings.

    Learning rates are per optimiser step; patiences are in epochs. ``validation_fraction`` of the
    training groups is held out only when no test file is given. ``lr_schedule``: ``"plateau"``
    multiplies the rate by ``lr_reduce_factor`` after ``lr_reduce_patience`` epochs without
    improvement (down to ``min_learning_rate``); ``"cosine"`` warms up linearly over
    ``lr_warmup_fraction`` of all steps, then decays per step from ``learning_rate`` to
    ``min_learning_rate`` at the last step (``ptycho.lr_schedule``).
    """

    max_epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    lr_schedule: str = "plateau"
    lr_warmup_fraction: float = 0.05
    lr_reduce_factor: float = 0.5
    lr_reduce_patience: int = 3
    min_learning_rate: float = 1e-5
    early_stopping_patience: int = 8
    validation_fraction: float = 0.1
    output_dir: str = "outputs/train"
    log_patch_stats: bool = False
    patch_stats_limit: int = 4
    resume: bool = False

    def __post_init__(self) -> None:
        s = "training"
        _coerce_fields(self, s)
        _check_min(s, "max_epochs", self.max_epochs, 1)
        _check_min(s, "batch_size", self.batch_size, 1)
        _check_positive(s, "learning_rate", self.learning_rate)
        _check_choice(s, "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not 0.0 <= self.lr_warmup_fraction < 1.0:
            raise _fail(s, "lr_warmup_fraction", self.lr_warmup_fraction,
                        "a number with 0 <= value < 1")
        if not 0.0 < self.lr_reduce_factor < 1.0:
            raise _fail(s, "lr_reduce_factor", self.lr_reduce_factor, "a number with 0 < value < 1")
        _check_min(s, "lr_reduce_patience", self.lr_reduce_patience, 0)
        if self.min_learning_rate < 0:
            raise _fail(s, "min_learning_rate", self.min_learning_rate, "a number >= 0")
        if self.lr_schedule == "cosine" and self.min_learning_rate > self.learning_rate:
            raise _fail(s, "min_learning_rate", self.min_learning_rate,
                        f"at most learning_rate ({self.learning_rate}) with lr_schedule 'cosine'")
        _check_min(s, "early_stopping_patience", self.early_stopping_patience, 0)
        if not 0.0 < self.validation_fraction < 1.0:
            raise _fail(s, "validation_fraction", self.validation_fraction,
                        "a number with 0 < value < 1")
        _check_nonempty(s, "output_dir", self.output_dir, optional=False)
        _check_min(s, "patch_stats_limit", self.patch_stats_limit, 1)


@dataclass(frozen=True)
class InferenceConfig:
    """Inference settings. ``stitch_crop`` (pixels) None means ``N`` with probe_big else ``N//2``.

    ``stitch_weighting``: ``"probe"`` weights every patch pixel by the scan probe's intensity
    when overlapping patches are averaged (``ptycho.stitch.probe_weight``); ``"uniform"`` gives
    every pixel of the crop the same weight.

    ``refine_steps`` > 0 refines the stitched object by that many full-scan gradient steps of
    the Poisson likelihood against the measured patterns (``ptycho.refine``),
    with Adam at ``refine_learning_rate`` on log-amplitude and phase; ``refine_probe`` refines
    the scan's probe with it. 0 keeps the network's stitched object as the result.

    ``com_phase_steps`` > 0 first corrects the slow phase of the stitched object from the
    measured patterns' centres of mass (``ptycho.com_phase``; amplitude unchanged), with the
    smoothness weight ``com_phase_smoothing``; 0 leaves it as stitched.
    """

    model_path: Optional[str] = None
    test_data: Optional[str] = None
    output_dir: str = "outputs/inference"
    batch_size: int = 64
    log_patch_stats: bool = False
    patch_stats_limit: int = 4
    stitch_crop: Optional[int] = None
    stitch_weighting: str = "probe"
    refine_steps: int = 0
    refine_learning_rate: float = 0.1
    refine_probe: bool = False
    com_phase_steps: int = 0
    com_phase_smoothing: float = 0.5

    def __post_init__(self) -> None:
        s = "inference"
        _coerce_fields(self, s)
        _check_nonempty(s, "model_path", self.model_path, optional=True)
        _check_nonempty(s, "test_data", self.test_data, optional=True)
        _check_nonempty(s, "output_dir", self.output_dir, optional=False)
        _check_min(s, "batch_size", self.batch_size, 1)
        _check_min(s, "patch_stats_limit", self.patch_stats_limit, 1)
        _check_min(s, "stitch_crop", self.stitch_crop, 1, optional=True)
        _check_choice(s, "stitch_weighting", self.stitch_weighting, STITCH_WEIGHTINGS)
        _check_min(s, "refine_steps", self.refine_steps, 0)
        _check_positive(s, "refine_learning_rate", self.refine_learning_rate)
        if self.refine_probe and self.refine_steps == 0:
            raise _fail(s, "refine_probe", self.refine_probe, "false unless refine_steps > 0")
        _check_min(s, "com_phase_steps", self.com_phase_steps, 0)
        _check_positive(s, "com_phase_smoothing", self.com_phase_smoothing)


@dataclass(frozen=True)
class ExecutionConfig:
    """Where and how a run executes: device, parallelism, numerics, logging, seeding.

    ``devices`` is an integer count written as a string, or ``"auto"``; ``precision`` is one of
    the Lightning-style names. Both accept plain ints on input.
    """

    accelerator: str = "auto"
    devices: str = field(default="1", metadata={"int_as_str": True})
    strategy: str = "auto"
    precision: str = field(default="32", metadata={"int_as_str": True})
    num_workers: int = 0
    logger: str = "csv"
    seed: int = 0
    deterministic: bool = False
    jit_compile: bool = False

    def __post_init__(self) -> None:
        s = "execution"
        _coerce_fields(self, s)
        _check_choice(s, "accelerator", self.accelerator, ACCELERATORS)
        devices = self.devices.strip()
        if devices != "auto":
            try:
                ok = int(devices) >= 1
            except ValueError:
                ok = False
            if not ok:
                raise _fail(s, "devices", self.devices, "'auto' or an integer >= 1")
            devices = str(int(devices))
        object.__setattr__(self, "devices", devices)
        _check_nonempty(s, "strategy", self.strategy, optional=False)
        _check_choice(s, "precision", self.precision, PRECISIONS)
        _check_min(s, "num_workers", self.num_workers, 0)
        _check_choice(s, "logger", self.logger, LOGGERS)
        _check_min(s, "seed", self.seed, 0)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "inference": InferenceConfig,
    "execution": ExecutionConfig,
}


@dataclass(frozen=True)
class PtychoConfig:
    """The whole run configuration; checks the rules that span sections.

    Cross-section rules: ``data.K >= model.gridsize**2`` when gridsize > 1 (a group draws its C
    members from K neighbours), and ``inference.stitch_crop <= model.N``.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _section_from_dict(name, value))
            elif not isinstance(value, cls):
                raise ConfigError(f"{name}: expected a {cls.__name__} or a mapping, "
                                  f"got {type(value).__name__}")
        g = self.model.gridsize
        if g > 1 and self.data.K < g * g:
            raise ConfigError(f"data.K: got {self.data.K}; with model.gridsize={g} it must be "
                              f">= gridsize**2 = {g * g}")
        crop = self.inference.stitch_crop
        if crop is not None and crop > self.model.N:
            raise ConfigError(f"inference.stitch_crop: got {crop}; allowed: 1 .. model.N "
                              f"= {self.model.N} or null")

    @property
    def resolved_stitch_crop(self) -> int:
        """Central crop in pixels placed when stitching: ``N`` with probe_big else ``N // 2``."""
        if self.inference.stitch_crop is not None:
            return self.inference.stitch_crop
        return self.model.N if self.model.probe_big else self.model.N // 2

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PtychoConfig":
        """Build from the nested form; unknown sections or keys raise ConfigError by name."""
        return from_dict(d)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain-Python dict (JSON/YAML serialisable) that ``from_dict`` reads back."""
        return to_dict(self)


# --------------------------------------------------------------------------- dict / file I/O

def valid_keys(section: str) -> tuple[str, ...]:
    """Field names of one section, in declaration order."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; valid sections: {', '.join(SECTIONS)}")
    return tuple(f.name for f in dataclasses.fields(SECTIONS[section]))


def coerce_field(section: str, name: str, value: Any) -> Any:
    """``value`` converted to the type of field ``section.name`` (range checks not applied).

    Raises ConfigError for an unknown section/field or a value of the wrong type.
    """
    cls = SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"unknown config section {section!r}; valid sections: {', '.join(SECTIONS)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ConfigError(f"unknown key '{section}.{name}'; valid keys in '{section}': "
                          f"{', '.join(fields)}")
    tp = typing.get_type_hints(cls)[name]
    return _coerce_one(section, name, value, tp, fields[name].metadata.get("int_as_str", False))


def _section_from_dict(section: str, values: Any) -> Any:
    cls = SECTIONS[section]
    if isinstance(values, cls):
        return values
    if values is None:
        return cls()
    if not isinstance(values, Mapping):
        raise ConfigError(f"{section}: expected a mapping of fields, got {type(values).__name__}")
    allowed = valid_keys(section)
    unknown = [k for k in values if k not in allowed]
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{section}.{k}' for k in map(str, unknown))};"
                          f" valid keys in '{section}': {', '.join(allowed)}")
    return cls(**dict(values))


def from_dict(d: Mapping[str, Any]) -> PtychoConfig:
    """Build a validated :class:`PtychoConfig` from ``{"model": {...}, ...}``.

    Missing sections and keys take their defaults.
    """
    if isinstance(d, PtychoConfig):
        return d
    if not isinstance(d, Mapping):
        raise ConfigError(f"config must be a mapping of sections, got {type(d).__name__}")
    unknown = [k for k in d if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown config section(s) {', '.join(map(repr, unknown))}; "
                          f"valid sections: {', '.join(SECTIONS)}")
    return PtychoConfig(**{name: _section_from_dict(name, d.get(name)) for name in SECTIONS})


def to_dict(config: PtychoConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dict of every field (defaults included)."""
    if not isinstance(config, PtychoConfig):
        raise ConfigError(f"expected a PtychoConfig, got {type(config).__name__}")
    return {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}


def _unique_keys(path: Path, pairs) -> dict:
    """A mapping from ``(key, value)`` pairs that refuses a key given twice (the later value
    would silently win)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"{path}: key {key!r} is given twice in the same section")
        out[key] = value
    return out


def _safe_load_unique(path: Path, text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        # Only the keys written in this mapping count; merged ones (<<: *anchor) may be
        # overridden, as YAML intends.
        written = [loader.construct_object(k, deep=deep) for k, _ in node.value
                   if k.tag != "tag:yaml.org,2002:merge"]
        _unique_keys(path, [(k, None) for k in written])
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                    construct_mapping)
    return yaml.load(text, Loader=UniqueKeyLoader)   # noqa: S506 (a SafeLoader subclass)


def _read_mapping(path: Path) -> Any:
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; --config expects a .yaml, .yml or .json file")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"{path}: unsupported config file type {suffix!r}; use .json, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    if suffix == ".json":
        try:
            data = json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(path, pairs))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    else:
        import yaml

        try:
            data = _safe_load_unique(path, text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Raw mapping stored in a ``.json``/``.yaml``/``.yml`` file (empty file -> ``{}``), unvalidated."""
    return dict(_read_mapping(Path(path)))


def load_config(path_or_dict: str | os.PathLike | Mapping[str, Any]) -> PtychoConfig:
    """Load a canonical nested config from a dict or a ``.json``/``.yaml``/``.yml`` file.

    Errors from a file name the file. Legacy or flat keys are not accepted here; use
    :func:`ptycho.config_bridge.resolve_config` for those.
    """
    if isinstance(path_or_dict, PtychoConfig):
        return path_or_dict
    if isinstance(path_or_dict, Mapping):
        return from_dict(path_or_dict)
    path = Path(path_or_dict)
    data = _read_mapping(path)
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_config(config: PtychoConfig, path: str | os.PathLike) -> Path:
    """Write ``config`` to a ``.json``/``.yaml``/``.yml`` file atomically; returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    data = to_dict(config)
    if suffix == ".json":
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    elif suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    else:
        raise ConfigError(f"{path}: unsupported config file type {suffix!r}; use .json, .yaml or .yml")
    return atomic_write_text(path, text)


def model_config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """``"model.k: checkpoint a, now b, ..."`` for every model setting that differs between a
    checkpoint's ``config.model`` dict and the run's ('' when none does). A setting missing on
    one side counts as its ``ModelConfig`` default, so a checkpoint written before a setting
    existed still matches a run that leaves it at its default."""
    defaults = dataclasses.asdict(ModelConfig())

    def value(d: Mapping[str, Any], k: str) -> Any:
        return d[k] if k in d else defaults.get(k)

    differ = sorted(k for k in set(saved) | set(current) if value(saved, k) != value(current, k))
    return ", ".join(f"model.{k}: checkpoint {value(saved, k)!r}, now {value(current, k)!r}"
                     for k in differ)


def check_same_model_config(saved: Mapping[str, Any], current: Mapping[str, Any], path) -> None:
    """``ValueError`` naming the checkpoint ``path`` and every differing model setting when a
    checkpoint (``saved``: its ``config.model`` dict) was written for another network than the
    run's (``current``); used by the ``--resume`` of both backends."""
    detail = model_config_differences(saved, current)
    if detail:
        raise ValueError(f"{path}: the checkpoint was written for a different network ({detail});"
                         " resume with the same settings or start without --resume")


def with_overrides(config: PtychoConfig, overrides: Mapping[str, Any]) -> PtychoConfig:
    """New validated config with dotted keys replaced, e.g. ``{"model.gridsize": 2}``.

    Each key must be ``"<section>.<field>"``; unknown sections or fields raise ConfigError
    listing the valid ones. All overrides are applied before validation, so interdependent
    values (gridsize and K) can change together.
    """
    data = to_dict(config)
    for key, value in overrides.items():
        section, sep, name = str(key).partition(".")
        if not sep or section not in SECTIONS:
            raise ConfigError(f"override key {key!r} must be '<section>.<field>' with section one of "
                              f"{', '.join(SECTIONS)}")
        if name not in data[section]:
            raise ConfigError(f"unknown key {key!r}; valid keys in '{section}': "
                              f"{', '.join(valid_keys(section))}")
        data[section][name] = value
    return from_dict(data)
