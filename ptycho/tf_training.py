"""Training loop of the TensorFlow backend: losses, compiled steps, epochs, history files.

The loop is written out (rather than ``keras.Model.fit``) because each step must hand the
model's predicted object patches to the patch-statistics logger and the validation loss needs the
validation data's own normalisation factor. It still uses the Keras pieces: the Adam optimiser
(wrapped in ``LossScaleOptimizer`` for float16 mixed precision), the ``ReduceLROnPlateau`` (or,
for ``lr_schedule="cosine"``, a per-step learning rate from ``ptycho.lr_schedule``) and
``EarlyStopping`` callbacks driven through a ``CallbackList``, and a ``Progbar`` progress bar
(shown when stdout is a terminal). The weights of the best epoch (lowest monitored loss:
``val_loss`` when there is validation data, else ``train_loss``) are restored at the end.

Losses (per pixel, averaged over batch, channels and pixels):

* unsupervised: Poisson NLL ``λ - K·log λ`` with ``λ`` the model's predicted counts and
  ``K = (X·f)²`` the measured counts (``f`` the data's normalisation factor); the full NLL
  ``+ log K!`` is reported as ``*_nll_full`` so runs compare;
* supervised: MAE of the network's amplitude and phase against the ground-truth patches
  (``|gt|``, ``angle(gt)``), on the predicted footprint (the central block without probe_big).

Arrays arrive channels-first from :mod:`ptycho.data.prepare` and are transposed here once to
the model's channels-last layout.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import keras
import tensorflow as tf

from ptycho import tf_helper as th
from ptycho.config_bridge import ADAM_EPSILON
from ptycho.sampling import epoch_order
from ptycho.tf_checkpoint import (CALLBACK_STATE_ATTRIBUTES, TrainingState, check_same_model,
                                  load_checkpoint, save_checkpoint)

__all__ = ["HISTORY_KEYS", "Split", "split_from_grouped", "poisson_losses", "supervised_loss",
           "make_optimizer", "make_steps", "FitResult", "fit"]

HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "train_nll_full", "val_nll_full", "lr",
                "intensity_scale", "time_s")


@dataclass(frozen=True)
class Split:
    """One data split in the model's layout.

    X: (G, N, N, C) float32 normalised amplitudes; offsets: (G, C, 2) float32; factor: the
    normalisation factor the amplitudes were divided by; gt: (G, N, N, C) complex64 ground-truth
    patches or None.
    """

    X: np.ndarray
    offsets: np.ndarray
    factor: float
    gt: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.X.shape[0])


def split_from_grouped(grouped, index: Optional[np.ndarray] = None) -> Split:
    """A :class:`Split` from ``ptycho.data.prepare.GroupedArrays`` (optionally a subset of groups)."""
    sel = slice(None) if index is None else index
    X = np.ascontiguousarray(np.transpose(grouped.X[sel], (0, 2, 3, 1)), dtype=np.float32)
    gt = None
    if grouped.gt_patches is not None:
        gt = np.ascontiguousarray(np.transpose(grouped.gt_patches[sel], (0, 2, 3, 1)),
                                  dtype=np.complex64)
    return Split(X=X, offsets=np.asarray(grouped.offsets[sel], np.float32),
                 factor=float(grouped.normalization_factor), gt=gt)


# ---------------------------------------------------------------------------------- losses
def poisson_losses(counts, X, factor):
    """``(mean NLL, mean full NLL)`` of predicted ``counts`` against ``K = (X·factor)²``."""
    K = tf.square(tf.cast(X, counts.dtype) * tf.cast(factor, counts.dtype))
    nll = th.poisson_nll(counts, K)
    return tf.reduce_mean(nll), tf.reduce_mean(nll + tf.math.lgamma(K + 1.0))


def supervised_loss(outputs, gt, footprint):
    """MAE of amplitude and phase against ground-truth patches ``gt`` (B, N, N, C) complex,
    over ``footprint`` (N, N) (ones with probe_big, else the central mask)."""
    amp, phase = outputs["patch_amp"], outputs["patch_phase"]
    w = tf.cast(footprint, amp.dtype)[None, :, :, None]
    gt = tf.cast(gt, tf.complex128 if amp.dtype == tf.float64 else tf.complex64)
    norm = tf.reduce_sum(w) * tf.cast(tf.shape(amp)[0] * tf.shape(amp)[3], amp.dtype)
    amp_err = tf.reduce_sum(w * tf.abs(amp - tf.abs(gt))) / norm
    dphi = tf.math.angle(tf.exp(tf.complex(tf.zeros_like(phase), phase - tf.math.angle(gt))))
    return amp_err + tf.reduce_sum(w * tf.abs(dphi)) / norm


# ---------------------------------------------------------------------------------- steps
def make_optimizer(learning_rate: float, precision: str = "32"):
    """Adam (epsilon ``ptycho.config_bridge.ADAM_EPSILON``, as the PyTorch backend); wrapped in
    ``LossScaleOptimizer`` for ``precision == "16-mixed"``."""
    opt = keras.optimizers.Adam(learning_rate=float(learning_rate), epsilon=ADAM_EPSILON)
    if precision == "16-mixed":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def make_steps(model, optimizer, *, jit_compile: bool = False):
    """``(train_step, eval_step)`` as ``tf.function`` (XLA with ``jit_compile``).

    Both take ``(X, offsets, factor, gt)`` (``gt`` a dummy zero-size tensor in unsupervised
    mode) and return ``(loss, nll_full, object_patches)``; ``nll_full`` is 0 in supervised mode.
    Retracing happens at most once per distinct batch size (the last partial batch).
    """
    supervised = model.mode == "supervised"
    footprint = np.ones((model.N, model.N), np.float32)
    if not model.probe_big:
        footprint = np.asarray(th.central_mask(model.N)).astype(np.float32)

    def losses(outputs, X, factor, gt):
        if supervised:
            loss = supervised_loss(outputs, gt, footprint)
            return loss, tf.zeros_like(loss)
        return poisson_losses(outputs["counts"], X, factor)

    def train_step(X, offsets, factor, gt):
        with tf.GradientTape() as tape:
            outputs = model((X, offsets), training=True)
            loss, full = losses(outputs, X, factor, gt)
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        return loss, full, outputs["object"]

    def eval_step(X, offsets, factor, gt):
        outputs = model((X, offsets), training=False)
        loss, full = losses(outputs, X, factor, gt)
        return loss, full, outputs["object"]

    return (tf.function(train_step, jit_compile=jit_compile, reduce_retracing=True),
            tf.function(eval_step, jit_compile=jit_compile, reduce_retracing=True))


# ---------------------------------------------------------------------------------- loop
@dataclass
class FitResult:
    """History (per-epoch lists keyed by ``HISTORY_KEYS``), best epoch (0-based) and the
    monitored key."""

    history: dict[str, list] = field(default_factory=dict)
    best_epoch: int = -1
    monitor: str = "train_loss"
    stopped_early: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.history.get("epoch", []))


def _batches(n: int, batch_size: int, order: np.ndarray):
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _gt_or_dummy(split: Split, idx, physics_dtype: str):
    if split.gt is None:
        return tf.zeros((0,), tf.complex128 if physics_dtype == "float64" else tf.complex64)
    return tf.constant(split.gt[idx])


def _set_learning_rate(optimizer, rate: Callable[[int], float], first_step: int,
                       batch_idx: int) -> None:
    optimizer.learning_rate = rate(first_step + batch_idx)


def _run_epoch(step, split: Split, batch_size: int, order: np.ndarray, *, phase: str, epoch: int,
               patch_logger, physics_dtype: str, progbar=None,
               before_step: Optional[Callable[[int], None]] = None) -> tuple[float, float]:
    """One pass over ``split`` in ``order``; returns the pattern-weighted mean (loss, full NLL).
    ``before_step(batch_idx)`` runs before every step (the per-step learning rate)."""
    tot_loss = tot_full = 0.0
    seen = 0
    factor = tf.constant(split.factor, physics_dtype)
    for batch_idx, idx in enumerate(_batches(len(split), batch_size, order)):
        if before_step is not None:
            before_step(batch_idx)
        loss, full, obj = step(tf.constant(split.X[idx]), tf.constant(split.offsets[idx]),
                               factor, _gt_or_dummy(split, idx, physics_dtype))
        loss_v, full_v = float(loss), float(full)
        if not (math.isfinite(loss_v)):
            raise FloatingPointError(f"{phase} loss became {loss_v} at batch {batch_idx}; lower "
                                     "--learning_rate or check the data")
        n = len(idx)
        tot_loss += loss_v * n
        tot_full += full_v * n
        seen += n
        if patch_logger is not None and patch_logger.wants(phase):
            patch_logger.log(np.transpose(obj.numpy(), (0, 3, 1, 2)), phase, batch_idx,
                             epoch=epoch)
        if progbar is not None:
            progbar.update(batch_idx + 1, [("loss", loss_v)])
    return tot_loss / max(seen, 1), tot_full / max(seen, 1)


def fit(model, train: Split, val: Optional[Split], *, epochs: int, batch_size: int,
        learning_rate: float, callback_kwargs: Mapping[str, Mapping[str, Any]], seed: int = 0,
        jit_compile: bool = False, precision: str = "32", patch_logger=None,
        log: Callable[[str], None] = print, progress: Optional[bool] = None,
        step_schedule: Optional[Callable[[int], Optional[Callable[[int], float]]]] = None,
        checkpoint: Optional[Path] = None, resume: bool = False,
        model_config: Optional[Mapping[str, Any]] = None,
        summary_dir: Optional[Path] = None) -> FitResult:
    """Train ``model`` in place and return the history.

    ``callback_kwargs``: ``{"reduce_lr": {...}, "early_stopping": {...}}`` as from
    ``ptycho.config_bridge.to_keras_callback_kwargs`` (without ``"reduce_lr"``: no plateau
    rule). ``step_schedule(total_steps)`` (e.g. ``ptycho.config_bridge.to_step_learning_rate``
    bound to the config) returns ``None`` or a function whose value at global step ``s`` (epoch
    times batches per epoch plus batch) becomes the learning rate before that step. Epoch ``e``
    visits the training groups in the order
    ``ptycho.sampling.epoch_order(len(train), seed, e)``; every group is used every epoch (the
    last batch may be partial). ``patch_logger`` (a
    ``ptycho.patch_stats.PatchStatsLogger``) receives the predicted object patches (B, C, N, N)
    of the first batches of each phase, in the order they are computed (training batch 0 of
    epoch 0 is the untrained network's prediction); each entry also records its ``epoch``.
    ``log`` receives the per-epoch line; ``progress`` shows a Keras progress bar (default:
    stdout is a TTY).

    ``checkpoint`` (a path, see :mod:`ptycho.tf_checkpoint`) receives the training state after
    every epoch, together with ``model_config`` (the config's model section as a dict); with
    ``resume`` the run first restores that state — weights, optimiser, history, best epoch and
    callback counters — and continues after its last epoch (``epochs`` is the total).
    ``summary_dir`` receives TensorBoard event files (``tf.summary``) with every history value
    per epoch (step = 0-based epoch).
    """
    if len(train) == 0:
        raise ValueError("the training split holds no groups")
    if model.mode == "supervised" and (train.gt is None or (val is not None and val.gt is None)):
        raise ValueError("supervised mode needs ground-truth patches (objectGuess) in the "
                         "training and validation data")
    if val is not None and len(val) == 0:
        val = None
    optimizer = make_optimizer(learning_rate, precision)
    model.compile(optimizer=optimizer)
    optimizer.build(model.trainable_variables)     # slots exist before the step is traced
    train_step, eval_step = make_steps(model, optimizer, jit_compile=jit_compile)
    monitor = "val_loss" if val is not None else "train_loss"
    rl = dict(callback_kwargs.get("reduce_lr", {}))
    es = dict(callback_kwargs.get("early_stopping", {}))
    es["restore_best_weights"] = False            # the best weights are restored below
    plateau = ([keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="min", verbose=0, **rl)]
               if "reduce_lr" in callback_kwargs else [])
    watchers = [*plateau,
                keras.callbacks.EarlyStopping(monitor=monitor, mode="min", verbose=0, **es)]
    callbacks = keras.callbacks.CallbackList(watchers, model=model)
    history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
    result = FitResult(history=history, monitor=monitor)
    best, best_weights = math.inf, None
    model_config = dict(model_config or {})
    show = sys.stdout.isatty() if progress is None else bool(progress)
    n_batches = -(-len(train) // batch_size)
    step_learning_rate = None if step_schedule is None else step_schedule(n_batches * int(epochs))
    model.stop_training = False
    callbacks.on_train_begin()
    start_epoch = 0
    if resume:
        state = load_checkpoint(checkpoint)
        check_same_model(state, model_config, checkpoint)
        _restore_state(model, optimizer, watchers, state, checkpoint)
        history.update({k: list(state.history.get(k, [])) for k in HISTORY_KEYS})
        best, best_weights, result.best_epoch = state.best, state.best_weights, state.best_epoch
        start_epoch = state.epochs_done
        if start_epoch >= int(epochs):
            log(f"{checkpoint} already holds {start_epoch} epochs (--max_epochs {epochs}); "
                "writing the bundle from it without further training")
        else:
            log(f"resuming from {checkpoint} after epoch {start_epoch} of {epochs}")
    writer = None if summary_dir is None else tf.summary.create_file_writer(str(summary_dir))
    for epoch in range(start_epoch, int(epochs)):
        t0 = time.perf_counter()
        callbacks.on_epoch_begin(epoch)
        bar = keras.utils.Progbar(n_batches, verbose=1, unit_name="batch") if show else None
        order = epoch_order(len(train), seed, epoch)
        set_rate = None if step_learning_rate is None else functools.partial(
            _set_learning_rate, optimizer, step_learning_rate, epoch * n_batches)
        tr_loss, tr_full = _run_epoch(train_step, train, batch_size, order, phase="train",
                                      epoch=epoch, patch_logger=patch_logger,
                                      physics_dtype=model.physics_dtype, progbar=bar,
                                      before_step=set_rate)
        va_loss = va_full = math.nan
        if val is not None:
            va_loss, va_full = _run_epoch(eval_step, val, batch_size, np.arange(len(val)),
                                          phase="val", epoch=epoch, patch_logger=patch_logger,
                                          physics_dtype=model.physics_dtype)
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        row = {"epoch": epoch, "train_loss": tr_loss, "val_loss": va_loss,
               "train_nll_full": tr_full, "val_nll_full": va_full, "lr": lr,
               "intensity_scale": model.intensity_scale_value(),
               "time_s": time.perf_counter() - t0}
        for k in HISTORY_KEYS:
            history[k].append(row[k])
        if writer is not None:
            with writer.as_default():
                for k in HISTORY_KEYS[1:]:
                    if math.isfinite(row[k]):
                        tf.summary.scalar(k, row[k], step=epoch)
            writer.flush()
        current = row[monitor]
        weights = model.get_weights() if checkpoint is not None or current < best else None
        if current < best:
            best, best_weights, result.best_epoch = current, weights, epoch
        log(f"epoch {epoch + 1}/{epochs}: train_loss={tr_loss:.6g} val_loss={va_loss:.6g} "
            f"train_nll_full={tr_full:.6g} val_nll_full={va_full:.6g} lr={lr:.3g} "
            f"intensity_scale={row['intensity_scale']:.6g} ({row['time_s']:.1f} s)")
        callbacks.on_epoch_end(epoch, {"loss": tr_loss, "train_loss": tr_loss,
                                       "val_loss": va_loss})
        if checkpoint is not None:
            save_checkpoint(checkpoint, TrainingState(
                epochs_done=epoch + 1, history=history, best=best, best_epoch=result.best_epoch,
                weights=weights, best_weights=best_weights,
                optimizer=[keras.ops.convert_to_numpy(v) for v in optimizer.variables],
                callbacks=[_callback_state(cb) for cb in watchers], model_config=model_config))
        if model.stop_training:
            result.stopped_early = True
            log(f"early stopping after epoch {epoch + 1}: {monitor} did not improve for "
                f"{es.get('patience')} epochs")
            break
    callbacks.on_train_end()
    if writer is not None:
        writer.close()
    if best_weights is not None:
        model.set_weights(best_weights)
    return result


def _callback_state(callback) -> dict:
    return {k: getattr(callback, k) for k in CALLBACK_STATE_ATTRIBUTES if hasattr(callback, k)}


def _restore_state(model, optimizer, watchers, state: TrainingState, path) -> None:
    """Load a checkpoint's weights, optimiser variables and callback counters in place."""
    variables = list(optimizer.variables)
    shapes = [tuple(w.shape) for w in model.get_weights()]
    if [tuple(w.shape) for w in state.weights] != shapes or len(state.optimizer) != len(variables) \
            or any(tuple(v.shape) != a.shape for v, a in zip(variables, state.optimizer)):
        raise ValueError(f"{path}: the checkpoint's weights or optimiser state do not fit this "
                         "model; resume with the same settings or start without --resume")
    model.set_weights(state.weights)
    for var, value in zip(variables, state.optimizer):
        var.assign(value)
    for callback, counters in zip(watchers, state.callbacks):
        for key, value in counters.items():
            if value is not None:
                setattr(callback, key, value)
