"""Translate user input into the canonical config, and the config into backend arguments.

Pure functions only; nothing here imports TensorFlow or PyTorch.

Input side: CLI flags, YAML/JSON files and legacy PtychoPINN field names (``nepochs``,
``n_images``, ``neighbor_count``, ``grid_size``, ``mode='Unsupervised'``, ``amp_activation='silu'``,
``probe.big`` ...) all become the nested canonical dict of :mod:`ptycho.config`. Keys may be given
nested (``{"training": {"max_epochs": 5}}``), dotted (``"training.max_epochs"``) or flat
(``"max_epochs"``). Flat names that exist in two sections are resolved by ``context``:
``batch_size``, ``output_dir``, ``log_patch_stats`` and ``patch_stats_limit`` go to the
``training`` or ``inference`` section; a flat ``seed`` sets both ``data.seed`` (grouping) and
``execution.seed`` (global RNG) so one flag makes the whole run reproducible.

Precedence is defaults < base config < YAML < CLI, and every value a source sets is recorded as an
:class:`Override`.

Output side: plain keyword dicts for Keras ``fit``/``compile`` and the Lightning ``Trainer``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ptycho.config import (
    SECTIONS,
    ConfigError,
    PtychoConfig,
    coerce_field,
    from_dict,
    read_config_file,
    to_dict,
    valid_keys,
)
from ptycho.lr_schedule import cosine_schedule

__all__ = [
    "ADAM_EPSILON",
    "PLATEAU_MIN_DELTA",
    "Override",
    "CONTEXTS",
    "FLAT_KEYS",
    "LEGACY_KEYS",
    "normalize_legacy_keys",
    "resolve_config",
    "to_keras_fit_kwargs",
    "to_keras_compile_kwargs",
    "to_keras_optimizer_kwargs",
    "to_keras_callback_kwargs",
    "to_keras_precision_policy",
    "to_lightning_trainer_kwargs",
    "to_torch_optimizer_kwargs",
    "to_torch_scheduler_kwargs",
    "to_step_learning_rate",
    "to_dataloader_kwargs",
]

CONTEXTS = ("training", "inference")

#: Adam's epsilon on both backends (the Keras default; torch's default is 1e-8).
ADAM_EPSILON = 1e-7
#: Smallest decrease of the monitored loss that counts as an improvement for the learning-rate
#: plateau rule, absolute (the Keras ``ReduceLROnPlateau`` default).
PLATEAU_MIN_DELTA = 1e-4

# Flat canonical names present in two sections; resolved by context (or both, for seed).
_AMBIGUOUS = {
    "batch_size": None,
    "output_dir": None,
    "log_patch_stats": None,
    "patch_stats_limit": None,
    "seed": ("data.seed", "execution.seed"),
}

# Legacy PtychoPINN names -> canonical flat names.
LEGACY_KEYS: dict[str, str] = {
    "nepochs": "max_epochs",
    "n_images": "n_groups",
    "neighbor_count": "K",
    "grid_size": "gridsize",
    "model_type": "mode",
    "probe.big": "probe_big",
    "probe.mask": "probe_mask",
    "probe.trainable": "probe_trainable",
    "intensity_scale.trainable": "intensity_scale_trainable",
}


def _build_flat_index() -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for section in SECTIONS:
        for name in valid_keys(section):
            index.setdefault(name, []).append(f"{section}.{name}")
    return {k: tuple(v) for k, v in index.items()}


_FLAT_INDEX = _build_flat_index()
FLAT_KEYS: frozenset[str] = frozenset(_FLAT_INDEX)
"""Every canonical field name usable as a flat key (CLI destinations use these names)."""


@dataclass(frozen=True)
class Override:
    """One value set by a source other than the defaults.

    ``source``: ``"yaml"`` / ``"cli"`` (the value ``new`` replaced ``old`` at dotted ``key``), or
    ``"legacy"`` (a legacy name or value was translated: ``origin`` is the name as written,
    ``old`` the value as written, ``new`` the canonical value), ``"data"`` (taken from the
    training data, e.g. ``model.N``) or ``"derived"`` (implied by another setting named in
    ``origin``, e.g. ``data.K`` from ``model.gridsize``). ``origin`` is otherwise the key as the
    user spelled it.
    """

    source: str
    key: str
    old: Any
    new: Any
    origin: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "key": self.key, "old": self.old, "new": self.new,
                "origin": self.origin}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Override":
        try:
            return cls(source=d["source"], key=d["key"], old=d["old"], new=d["new"],
                       origin=d.get("origin"))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"malformed override record {d!r}: missing {exc}") from None


def _check_context(context: str) -> None:
    if context not in CONTEXTS:
        raise ConfigError(f"context must be one of {', '.join(CONTEXTS)}; got {context!r}")


def _flat_targets(name: str, context: str) -> Optional[tuple[str, ...]]:
    """Dotted targets of a flat canonical name, or None if unknown."""
    if name not in _FLAT_INDEX:
        return None
    if name in _AMBIGUOUS:
        fixed = _AMBIGUOUS[name]
        return fixed if fixed is not None else (f"{context}.{name}",)
    return _FLAT_INDEX[name]


def _translate_value(dotted: str, value: Any) -> Any:
    """Canonical spelling of legacy values: mode and activation names."""
    if dotted == "model.mode" and isinstance(value, str):
        low = value.strip().lower()
        return "unsupervised" if low == "pinn" else low
    if dotted == "model.amp_activation" and isinstance(value, str):
        low = value.strip().lower()
        return "swish" if low == "silu" else low
    return value


def _valid_flat_listing() -> str:
    return ", ".join(sorted(FLAT_KEYS | set(LEGACY_KEYS), key=str.lower))


def _resolve_key(key: str, context: str, section_hint: Optional[str]) -> tuple[str, ...]:
    """Dotted targets for a key written by the user (flat, dotted, legacy or dashed)."""
    if section_hint is not None:
        if key in valid_keys(section_hint):
            return (f"{section_hint}.{key}",)
        dashed = key.replace("-", "_")
        if dashed in valid_keys(section_hint):
            return (f"{section_hint}.{dashed}",)
    if section_hint is not None:
        legacy = LEGACY_KEYS.get(key, LEGACY_KEYS.get(key.replace("-", "_")))
        if legacy is not None and legacy in valid_keys(section_hint):
            return (f"{section_hint}.{legacy}",)
        raise ConfigError(f"unknown key '{section_hint}.{key}'; valid keys in '{section_hint}': "
                          f"{', '.join(valid_keys(section_hint))}")
    if key in LEGACY_KEYS:
        targets = _flat_targets(LEGACY_KEYS[key], context)
        assert targets is not None
        return targets
    section, sep, name = key.partition(".")
    if sep and section in SECTIONS:
        if name not in valid_keys(section):
            raise ConfigError(f"unknown key {key!r}; valid keys in '{section}': "
                              f"{', '.join(valid_keys(section))}")
        return (key,)
    name = key.replace("-", "_")
    name = LEGACY_KEYS.get(name, name)
    targets = _flat_targets(name, context)
    if targets is not None:
        return targets
    raise ConfigError(f"unknown config key {key!r}; valid keys: the sections "
                      f"{', '.join(SECTIONS)}, dotted '<section>.<field>', or one of: "
                      f"{_valid_flat_listing()}")


def normalize_legacy_keys(d: Mapping[str, Any], context: str = "training"
                          ) -> tuple[dict[str, dict[str, Any]], tuple[Override, ...]]:
    """Turn nested, dotted, flat or legacy keys into the canonical nested dict.

    Returns ``(nested, legacy_records)``: ``nested`` holds only the keys present in ``d`` (as
    ``{section: {field: value}}``); ``legacy_records`` has one ``Override(source="legacy")`` per
    legacy name or value that was translated. Two spellings of the same field with different
    values raise ConfigError naming both; unknown keys raise ConfigError listing the valid ones.
    """
    nested, records, _ = _normalize(d, context)
    return nested, records


def _normalize(d: Mapping[str, Any], context: str
               ) -> tuple[dict[str, dict[str, Any]], tuple[Override, ...], dict[str, str]]:
    """``normalize_legacy_keys`` plus the key each dotted field was written as."""
    _check_context(context)
    if not isinstance(d, Mapping):
        raise ConfigError(f"config overrides must be a mapping, got {type(d).__name__}")
    entries: list[tuple[str, Any, Optional[str]]] = []  # (key as written, value, section hint)
    for key, value in d.items():
        key = str(key)
        if key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"section {key!r} must be a mapping of fields, "
                                  f"got {type(value).__name__}")
            for sub_key, sub_value in value.items():
                entries.append((str(sub_key), sub_value, key))
        else:
            entries.append((key, value, None))

    nested: dict[str, dict[str, Any]] = {}
    written_as: dict[str, str] = {}
    records: list[Override] = []
    for key, value, hint in entries:
        ctx = hint if hint in CONTEXTS else context
        shown = f"{hint}.{key}" if hint else key
        for dotted in _resolve_key(key, ctx, hint):
            section, _, name = dotted.partition(".")
            new_value = _translate_value(dotted, value)
            renamed = key.replace("-", "_") in LEGACY_KEYS or key in LEGACY_KEYS
            if renamed or (new_value != value and isinstance(value, str)):
                records.append(Override("legacy", dotted, value, new_value, origin=shown))
            bucket = nested.setdefault(section, {})
            if name in bucket and bucket[name] != new_value:
                raise ConfigError(f"conflicting values for {dotted}: {written_as[dotted]}="
                                  f"{bucket[name]!r} and {shown}={value!r}")
            bucket[name] = new_value
            written_as[dotted] = shown
    return nested, tuple(records), written_as


def _apply(data: dict[str, dict[str, Any]], nested: Mapping[str, Mapping[str, Any]], source: str,
           written_as: Mapping[str, str], records: list[Override]) -> None:
    for section, values in nested.items():
        for name, value in values.items():
            dotted = f"{section}.{name}"
            value = coerce_field(section, name, value)
            records.append(Override(source, dotted, data[section][name], value,
                                    origin=written_as.get(dotted)))
            data[section][name] = value


GROUP_NEIGHBOUR_SLACK = 2   # K = C + 2 neighbours when K is left unset (gridsize 2: K = 6)


def _derive_neighbour_count(data: dict[str, dict[str, Any]], records: list[Override]) -> None:
    """Raise ``data.K`` to ``gridsize**2 + GROUP_NEIGHBOUR_SLACK`` when the groups need more
    neighbours than the default supplies and neither the file nor the flags set K (recorded
    with source ``"derived"``); a K the user set is left alone and validated as given."""
    g = data["model"]["gridsize"]
    if not isinstance(g, int) or isinstance(g, bool) or g < 2:
        return
    if any(r.key == "data.K" and r.source in ("yaml", "cli") for r in records):
        return
    old = data["data"]["K"]
    if isinstance(old, int) and old < g * g:
        new = g * g + GROUP_NEIGHBOUR_SLACK
        data["data"]["K"] = new
        records.append(Override("derived", "data.K", old, new, origin="model.gridsize"))


def resolve_config(cli_overrides: Optional[Mapping[str, Any]] = None,
                   yaml_path: Optional[str | os.PathLike] = None,
                   base: Optional[PtychoConfig] = None,
                   context: str = "training") -> tuple[PtychoConfig, tuple[Override, ...]]:
    """Build the run config with precedence defaults < ``base`` < YAML/JSON file < CLI.

    ``cli_overrides`` is a flat (or dotted/nested) dict such as
    :func:`ptycho.cli_common.namespace_to_overrides` returns; ``None`` values there mean "flag not
    given" and are skipped, so unset flags never override the file. ``yaml_path`` may be a
    ``.yaml``, ``.yml`` or ``.json`` file in nested, flat or legacy form. Every value set by the
    file or the CLI is recorded (even when equal to the previous value), preceded by the legacy
    translations of that source. Returns ``(config, overrides)``.
    """
    _check_context(context)
    data = to_dict(base if base is not None else PtychoConfig())
    records: list[Override] = []
    if yaml_path is not None:
        raw = read_config_file(yaml_path)
        try:
            nested, legacy, written_as = _normalize(raw, context)
            records.extend(legacy)
            _apply(data, nested, "yaml", written_as, records)
        except ConfigError as exc:
            raise ConfigError(f"{yaml_path}: {exc}") from None
    if cli_overrides:
        given = {k: v for k, v in cli_overrides.items() if v is not None}
        nested, legacy, written_as = _normalize(given, context)
        records.extend(legacy)
        _apply(data, nested, "cli", written_as, records)
    _derive_neighbour_count(data, records)
    try:
        config = from_dict(data)
    except ConfigError as exc:
        message = str(exc)
        sources = [f"{r.source}" + (f" ({yaml_path})" if r.source == "yaml" else "")
                   for r in records if r.source != "legacy" and message.startswith(r.key)]
        if sources:
            message += f" [value set by {sources[-1]}]"
        raise ConfigError(message) from None
    return config, tuple(records)


# --------------------------------------------------------------------------- backend arguments

def to_keras_fit_kwargs(config: PtychoConfig) -> dict[str, Any]:
    """Keyword arguments for ``keras.Model.fit``: epochs, batch size (groups per step), shuffle."""
    return {"epochs": config.training.max_epochs, "batch_size": config.training.batch_size,
            "shuffle": True}


def to_keras_compile_kwargs(config: PtychoConfig) -> dict[str, Any]:
    """Keyword arguments for ``keras.Model.compile`` that come from the config (XLA on/off)."""
    return {"jit_compile": config.execution.jit_compile}


def to_keras_optimizer_kwargs(config: PtychoConfig) -> dict[str, Any]:
    """Keyword arguments for the Keras Adam optimiser."""
    return {"learning_rate": config.training.learning_rate}


def to_keras_callback_kwargs(config: PtychoConfig) -> dict[str, dict[str, Any]]:
    """Arguments for Keras ``ReduceLROnPlateau`` and ``EarlyStopping`` (patiences in epochs).

    The plateau rule is :data:`PLATEAU_MIN_DELTA` absolute; the learning rate drops after
    ``lr_reduce_patience`` epochs without improvement (at least one). With
    ``lr_schedule="cosine"`` there is no ``"reduce_lr"`` entry (see :func:`to_step_learning_rate`).
    """
    t = config.training
    kwargs = {"early_stopping": {"patience": t.early_stopping_patience,
                                 "restore_best_weights": True}}
    if t.lr_schedule == "plateau":
        kwargs["reduce_lr"] = {"factor": t.lr_reduce_factor, "patience": t.lr_reduce_patience,
                               "min_lr": t.min_learning_rate, "min_delta": PLATEAU_MIN_DELTA}
    return kwargs


def to_step_learning_rate(config: PtychoConfig,
                          total_steps: int) -> Optional[Callable[[int], float]]:
    """``step -> learning rate`` for a per-step schedule over ``total_steps`` optimiser steps
    (``max_epochs`` times the batches per epoch), the same function on both backends; ``None``
    for the epoch-wise ``"plateau"`` schedule."""
    t = config.training
    if t.lr_schedule == "plateau":
        return None
    return cosine_schedule(total_steps, t.learning_rate, t.min_learning_rate,
                           t.lr_warmup_fraction)


_KERAS_POLICY = {"32": "float32", "64": "float64", "16-mixed": "mixed_float16",
                 "bf16-mixed": "mixed_bfloat16"}


def to_keras_precision_policy(config: PtychoConfig) -> str:
    """Keras dtype policy name for ``execution.precision``."""
    return _KERAS_POLICY[config.execution.precision]


_LIGHTNING_PRECISION = {"32": "32-true", "64": "64-true", "16-mixed": "16-mixed",
                        "bf16-mixed": "bf16-mixed"}


def to_lightning_trainer_kwargs(config: PtychoConfig) -> dict[str, Any]:
    """Keyword arguments for ``lightning.Trainer`` (logger and callbacks are built by the backend).

    ``devices`` becomes an int unless it is ``"auto"``; precision uses Lightning's explicit names.
    """
    e = config.execution
    devices: Any = e.devices if e.devices == "auto" else int(e.devices)
    return {
        "max_epochs": config.training.max_epochs,
        "accelerator": e.accelerator,
        "devices": devices,
        "strategy": e.strategy,
        "precision": _LIGHTNING_PRECISION[e.precision],
        "deterministic": e.deterministic,
        "default_root_dir": config.training.output_dir,
    }


def to_torch_optimizer_kwargs(config: PtychoConfig) -> dict[str, Any]:
    """Keyword arguments for ``torch.optim.Adam``: the learning rate and Keras' epsilon
    (:data:`ADAM_EPSILON`)."""
    return {"lr": config.training.learning_rate, "eps": ADAM_EPSILON}


def to_torch_scheduler_kwargs(config: PtychoConfig) -> dict[str, Any]:
    """Keyword arguments for ``torch.optim.lr_scheduler.ReduceLROnPlateau`` that reproduce the
    Keras schedule of :func:`to_keras_callback_kwargs`: absolute threshold
    :data:`PLATEAU_MIN_DELTA`, and ``patience - 1`` (at least 0) because torch reduces after
    *more than* ``patience`` bad epochs, Keras after ``patience`` (at least one)."""
    t = config.training
    return {"mode": "min", "factor": t.lr_reduce_factor,
            "patience": max(t.lr_reduce_patience - 1, 0), "min_lr": t.min_learning_rate,
            "threshold": PLATEAU_MIN_DELTA, "threshold_mode": "abs"}


def to_dataloader_kwargs(config: PtychoConfig, context: str = "training") -> dict[str, Any]:
    """Batch size (groups) and worker count for a data loader in the given context."""
    _check_context(context)
    batch = config.training.batch_size if context == "training" else config.inference.batch_size
    return {"batch_size": batch, "num_workers": config.execution.num_workers}
