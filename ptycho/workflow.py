"""Training and inference orchestration of the TensorFlow backend.

Training (:func:`build_training_payload`, :func:`run_training`): CLI flags and the ``--config``
file become one :class:`~ptycho.payload.TrainingPayload` (config via
``ptycho.config_bridge.resolve_config``; ``model.N`` defaults to the data's pattern size when
neither the flags nor the file set it; statistics from the training file; the file's probe;
overrides; sha256 provenance). That one object drives the whole run and is written into the
bundle. The model starts from the seeded weights of :func:`build_training_model`; validation
split and batch order come from :mod:`ptycho.sampling` (the same as the PyTorch backend's for
the same seed). ``run_training`` writes into ``training.output_dir``:

* ``model/`` -- the model bundle (``ptycho.bundle.write_bundle``: manifest, ``model.weights.h5``,
  ``probe.npy``) with the weights of the best epoch and the *trained* intensity scale;
* ``history.json``, ``history.csv``, ``loss_curve.png``;
* with ``execution.logger == "tensorboard"``: TensorBoard event files of the per-epoch
  history under ``logs/`` (``"csv"`` and ``"none"`` add nothing: ``history.csv`` is always
  written);
* ``checkpoints/last.npz`` -- the training state after the latest epoch
  (:mod:`ptycho.tf_checkpoint`); with ``training.resume`` a run continues from it;
* with ``log_patch_stats``: ``tf_patch_stats.json`` and ``tf_patch_grid.png`` of the model's
  predicted object patches for the first training and validation batches.

Inference (:func:`resolve_inference_payload`, :func:`run_inference`): the bundle fixes the model
settings; the test data are grouped like the training data (gridsize, K, seed) and normalised by
their own normalisation factor; every group is predicted batch by batch (the last partial batch
included) and stitched at once into a ``ptycho.stitch.Stitcher``. Outputs are described in
:mod:`ptycho.inference`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from ptycho.bundle import BUNDLE_DIRNAME, resolve_bundle_dir
from ptycho.config import ConfigError
from ptycho.inference_core import InferenceResult, prepare_scan, stream_and_write
from ptycho.payload import build_training_payload
from ptycho.payload import resolve_inference_payload as _resolve_inference_payload

__all__ = ["BUNDLE_DIRNAME", "WEIGHTS_FILENAME", "BACKEND", "TrainingResult", "InferenceResult",
           "build_training_payload", "build_training_model", "configure_execution",
           "run_training", "resolve_bundle_dir", "resolve_inference_payload", "load_model",
           "run_inference"]

WEIGHTS_FILENAME = "model.weights.h5"
BACKEND = "tf"


# ------------------------------------------------------------------------------ execution
def configure_execution(execution) -> str:
    """Apply ``ExecutionConfig`` to TensorFlow (devices, determinism); returns the device used.

    ``accelerator="cpu"`` hides the GPUs (only possible before TensorFlow has initialised its
    devices; afterwards a visible GPU raises ``RuntimeError``); ``"gpu"`` requires one;
    ``"auto"`` uses a GPU when present. ``deterministic`` enables TensorFlow op determinism.
    Distributed strategies and multiple devices are not supported by this backend.
    """
    import tensorflow as tf

    if execution.devices not in ("1", "auto"):
        raise ConfigError(f"execution.devices: the TensorFlow backend runs on one device, got "
                          f"{execution.devices!r}")
    if execution.strategy not in ("auto", "single_device"):
        raise ConfigError(f"execution.strategy: the TensorFlow backend has no strategy "
                          f"{execution.strategy!r}; use 'auto'")
    gpus = tf.config.list_physical_devices("GPU")
    if execution.accelerator == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as exc:
            raise RuntimeError(f"cannot hide the GPUs for accelerator='cpu': {exc}") from None
        gpus = []
    if execution.accelerator == "gpu" and not gpus:
        raise ConfigError("execution.accelerator: 'gpu' requested but TensorFlow sees no GPU")
    if execution.deterministic:
        tf.config.experimental.enable_op_determinism()
    return "gpu" if gpus else "cpu"


# ------------------------------------------------------------------------------ training
@dataclass
class TrainingResult:
    """What :func:`run_training` produced."""

    bundle_dir: Path
    history: dict
    intensity_scale: float
    epochs_run: int
    best_epoch: int
    output_files: dict = field(default_factory=dict)


def build_training_model(payload):
    """The Keras model of a training run, built from ``payload`` and started from the seeded
    initial weights of :mod:`ptycho.initial_weights` (``execution.seed``), the same numbers the
    PyTorch backend starts from."""
    from ptycho import tf_weights
    from ptycho.initial_weights import initial_weights
    from ptycho.model import build_model

    cfg = payload.config
    model = build_model(cfg.model, payload.probe, payload.stats.intensity_scale,
                        payload.stats.normalization_factor, precision=cfg.execution.precision)
    tf_weights.import_weights(model, initial_weights(cfg.model, cfg.execution.seed,
                                                     tf_weights.export_weights(model)))
    return model


def run_training(payload, train_data, test_data=None, *,
                 log: Callable[[str], None] = print) -> TrainingResult:
    """Train on ``train_data`` (validate on ``test_data`` or a held-out fraction of groups)
    with the settings of ``payload`` and write the bundle and history files (module doc)."""
    import keras

    from ptycho import tf_training
    from ptycho.atomic import atomic_write_json
    from ptycho.bundle import write_bundle
    from ptycho.config_bridge import (to_keras_callback_kwargs, to_keras_fit_kwargs,
                                      to_step_learning_rate)
    from ptycho.data.prepare import prepare_grouped_arrays, prepare_validation_arrays
    from ptycho.history_files import training_summary, write_history
    from ptycho.sampling import split_groups
    from ptycho.tf_checkpoint import checkpoint_path, require_checkpoint

    cfg = payload.config
    m, d, t, ex = cfg.model, cfg.data, cfg.training, cfg.execution
    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if t.resume:
        require_checkpoint(checkpoint_path(out))     # before the data are grouped
    device = configure_execution(ex)
    keras.utils.set_random_seed(ex.seed)
    supervised = m.mode == "supervised"
    grouped = prepare_grouped_arrays(train_data, m.gridsize, payload.stats.normalization_factor,
                                     n_groups=d.n_groups, K=d.K, seed=d.seed,
                                     with_ground_truth=supervised, interpolation=m.interpolation)
    if test_data is not None:
        vgrouped = prepare_validation_arrays(test_data, cfg)
        train_split = tf_training.split_from_grouped(grouped)
        val_split = tf_training.split_from_grouped(vgrouped)
    else:
        tr_idx, va_idx = split_groups(len(grouped), t.validation_fraction, d.seed)
        train_split = tf_training.split_from_grouped(grouped, tr_idx)
        val_split = tf_training.split_from_grouped(grouped, va_idx) if len(va_idx) else None
    log(f"ptycho.train: {len(train_split)} training groups, "
        f"{0 if val_split is None else len(val_split)} validation groups of "
        f"{m.gridsize ** 2} patterns ({m.N}x{m.N}); device {device}; precision {ex.precision}; "
        f"XLA {'on' if ex.jit_compile else 'off'}")

    model = build_training_model(payload)
    patch_logger = None
    if t.log_patch_stats:
        from ptycho.patch_stats import PatchStatsLogger

        patch_logger = PatchStatsLogger(out, BACKEND, m.gridsize, limit=t.patch_stats_limit)
    fit_kwargs = to_keras_fit_kwargs(cfg)
    result = tf_training.fit(
        model, train_split, val_split, epochs=fit_kwargs["epochs"],
        batch_size=fit_kwargs["batch_size"], learning_rate=t.learning_rate,
        callback_kwargs=to_keras_callback_kwargs(cfg), seed=ex.seed, jit_compile=ex.jit_compile,
        precision=ex.precision, patch_logger=patch_logger, log=log,
        step_schedule=functools.partial(to_step_learning_rate, cfg),
        checkpoint=checkpoint_path(out), resume=t.resume,
        summary_dir=out / "logs" if ex.logger == "tensorboard" else None,
        model_config=dataclasses.asdict(m))

    files: dict[str, Any] = {}
    files.update({f"history_{k}": v for k, v in write_history(
        result.history, out, title="TensorFlow training loss (Poisson NLL per pixel)"
        if not supervised else "TensorFlow training loss (supervised MAE)",
        full_nll=not supervised).items()})
    if patch_logger is not None and patch_logger.entries:
        written = patch_logger.write()
        files["patch_stats"], files["patch_grid"] = Path(written["json"]), Path(written["png"])
    scale = model.intensity_scale_value()           # the trained value, after best-epoch restore
    h, best = result.history, result.best_epoch
    summary = training_summary(h, best_epoch=best, monitor=result.monitor,
                               best_monitored_loss=h[result.monitor][best] if best >= 0 else None,
                               stopped_early=result.stopped_early,
                               intensity_scale_initial=payload.stats.intensity_scale,
                               intensity_scale_trained=scale)
    bundle_dir = write_bundle(out / BUNDLE_DIRNAME, backend=BACKEND, payload=payload,
                              write_weights=lambda p: model.save_weights(str(p)),
                              weights_filename=WEIGHTS_FILENAME, intensity_scale=scale,
                              history_summary=summary)
    files["bundle"] = bundle_dir
    files["payload"] = atomic_write_json(out / "training_payload.json", payload.to_dict())
    return TrainingResult(bundle_dir=bundle_dir, history=result.history, intensity_scale=scale,
                          epochs_run=result.epochs_run, best_epoch=best, output_files=files)


# ------------------------------------------------------------------------------ inference
def resolve_inference_payload(cli_overrides: Optional[Mapping[str, Any]] = None,
                              config_path: Optional[str] = None):
    """Flags + config file -> ``(InferencePayload, LoadedBundle)`` of a TensorFlow bundle
    (:func:`ptycho.payload.resolve_inference_payload`)."""
    return _resolve_inference_payload(cli_overrides, config_path, backend=BACKEND)


def load_model(bundle, precision: str = "32"):
    """Rebuild the model of a loaded bundle and load its ``.weights.h5``.

    The model is built with the bundle's config, probe, intensity scale and normalisation
    factor; after loading, the intensity scale held in the weights must equal the manifest's.
    """
    from ptycho.bundle import BundleError
    from ptycho.model import build_model

    model = build_model(bundle.config.model, bundle.probe, bundle.intensity_scale,
                        bundle.normalization_factor, precision=precision)
    try:
        model.load_weights(str(bundle.weights_path))
    except (ValueError, KeyError, OSError) as exc:
        raise BundleError(f"{bundle.weights_path}: weights do not fit the bundle's model "
                          f"config: {exc}") from None
    stored = model.intensity_scale_value()
    if not np.isclose(stored, bundle.intensity_scale, rtol=1e-5):
        raise BundleError(f"{bundle.weights_path}: intensity scale in the weights ({stored}) "
                          f"differs from the manifest ({bundle.intensity_scale})")
    return model


def run_inference(payload, bundle, *, t_start: Optional[float] = None,
                  log: Callable[[str], None] = print) -> InferenceResult:
    """Predict, stitch and write every output of one inference run (see ``ptycho.inference``)."""
    import tensorflow as tf

    t0 = time.perf_counter() if t_start is None else t_start
    cfg = payload.config
    ex = cfg.execution
    device = configure_execution(ex)
    model = load_model(bundle, precision=ex.precision)
    scan = prepare_scan(cfg)
    t_load = time.perf_counter() - t0
    log(f"ptycho.inference: bundle {payload.bundle_dir}: intensity scale "
        f"{bundle.intensity_scale:.6g} (trained), training normalisation factor "
        f"{bundle.normalization_factor:.6g}; test data {scan.data.source}: {scan.data.M} "
        f"patterns, {len(scan.grouped)} groups of {scan.grouped.C}, normalisation factor "
        f"{scan.normalization_factor:.6g}; device {device}")

    def forward(X, offsets):
        return model((X, offsets), training=False)["object"]

    forward_fn = tf.function(forward, jit_compile=ex.jit_compile, reduce_retracing=True)

    def predict(X: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        obj = forward_fn(tf.constant(np.transpose(X, (0, 2, 3, 1))), tf.constant(offsets))
        return np.transpose(obj.numpy(), (0, 3, 1, 2))             # (B, N, N, C) -> (B, C, N, N)

    return stream_and_write(scan, predict, cfg, prefix=BACKEND, title="TensorFlow reconstruction",
                            t_start=t0, t_load=t_load, intensity_scale=bundle.intensity_scale,
                            timing_extra=lambda: {"device": device,
                                                  "jit_compile": ex.jit_compile},
                            log=lambda msg: log(f"ptycho.inference: {msg}"))
