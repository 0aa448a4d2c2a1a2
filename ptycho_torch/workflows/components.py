"""Training workflow of the PyTorch backend: CLI/YAML input → one payload → trained bundle.

``build_training_payload`` (``ptycho.payload.build_training_payload``, shared with the TensorFlow
backend) turns the flags the user gave and the ``--config`` file into one
:class:`~ptycho.payload.TrainingPayload` (config via ``ptycho.config_bridge.resolve_config``,
``model.N`` from the data unless set, data statistics from the training file, the file's probe,
the overrides and the files' sha256).
``run_training`` hands that same object to the data module, the Lightning module and the
Trainer arguments, trains, and writes into ``training.output_dir``:

* ``model/`` — the model bundle (``ptycho.bundle.write_bundle``: manifest, ``model.pt`` state
  dict of plain tensors, ``probe.npy``), holding the weights and the trained intensity scale of
  the best epoch by the monitored loss;
* ``history.json`` and ``history.csv`` — per-epoch losses, learning rate, intensity scale and
  seconds;
* ``training_payload.json`` — the payload of the run (as in the bundle's manifest);
* ``loss_curve.png``;
* ``checkpoints/`` (``last.ckpt`` after every epoch, ``best-epoch=E.ckpt``), ``logs/``;
* ``torch_patch_stats.json`` and ``torch_patch_grid.png`` with ``log_patch_stats``.

With ``training.resume`` the run continues from ``checkpoints/last.ckpt`` (model, optimiser,
scheduler, callbacks and the history so far); a checkpoint written for other model settings is
refused with a ``ValueError`` naming them. Files are written atomically, and the bundle only
after training finished, so an interrupted run never leaves a partial bundle behind.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from ptycho.bundle import BUNDLE_DIRNAME
from ptycho.config import check_same_model_config, to_dict
from ptycho.history_files import training_summary, write_history
from ptycho.data.contract import PtychoData
from ptycho.payload import TrainingPayload, build_training_payload

__all__ = [
    "BUNDLE_DIRNAME",
    "WEIGHTS_FILENAME",
    "HISTORY_KEYS",
    "TrainingResult",
    "build_training_payload",
    "check_resume_config",
    "check_resume_state_dict",
    "make_history_callback",
    "run_training",
    "write_history",
    "save_state_dict",
    "load_state_dict",
]

WEIGHTS_FILENAME = "model.pt"
HISTORY_KEYS = ("train_loss", "val_loss", "train_nll_full", "val_nll_full")


def make_history_callback():
    """A Lightning callback that records per-epoch metrics and survives checkpoint/resume."""
    from lightning.pytorch.callbacks import Callback

    class HistoryCallback(Callback):
        """Per-epoch ``epoch``, losses (``HISTORY_KEYS``), ``lr`` (the rate of the epoch's last
        optimiser step, as the TensorFlow backend records), ``intensity_scale`` and ``time_s``
        (wall seconds of the epoch, training and validation)."""

        def __init__(self) -> None:
            self.history: dict[str, list] = {k: [] for k in ("epoch",) + HISTORY_KEYS
                                             + ("lr", "intensity_scale", "time_s")}
            self._step_lr = math.nan
            self._epoch_start = time.perf_counter()

        @staticmethod
        def _lr(trainer) -> float:
            opt = trainer.optimizers[0] if trainer.optimizers else None
            return float(opt.param_groups[0]["lr"]) if opt else math.nan

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._epoch_start = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._step_lr = self._lr(trainer)       # the rate this step uses

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            metrics = trainer.callback_metrics
            self.history["epoch"].append(int(trainer.current_epoch))
            for key in HISTORY_KEYS:
                value = metrics.get(key)
                self.history[key].append(float(value) if value is not None else math.nan)
            lr = self._step_lr if math.isfinite(self._step_lr) else self._lr(trainer)
            self.history["lr"].append(lr)
            self.history["intensity_scale"].append(pl_module.model.intensity_scale_value())
            self.history["time_s"].append(time.perf_counter() - self._epoch_start)

        def state_dict(self) -> dict:
            return {"history": {k: list(v) for k, v in self.history.items()}}

        def load_state_dict(self, state_dict: dict) -> None:
            saved = state_dict.get("history", {})
            n = len(saved.get("epoch", []))
            for k in self.history:       # a key the checkpoint lacks is NaN for its epochs
                self.history[k] = [int(v) if k == "epoch" else float(v)
                                   for v in saved.get(k, [math.nan] * n)]

    return HistoryCallback()


def make_resume_hint_callback(checkpoint: Path):
    """A Lightning callback that, when training is interrupted (Ctrl-C), says on stderr that no
    bundle was written and where ``--resume`` continues from (Lightning then exits with 1)."""
    from lightning.pytorch.callbacks import Callback

    class ResumeHint(Callback):
        def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
            if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
                print(f"ptycho_torch.train: interrupted; no bundle was written. Continue with "
                      f"--resume (from {checkpoint})", file=sys.stderr, flush=True)

    return ResumeHint()


def save_state_dict(module, path: Path) -> None:
    """``torch.save`` of the model's state dict as plain CPU tensors (readable with
    ``weights_only=True``)."""
    import torch

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    torch.save(state, path)


def load_state_dict(path: Path) -> dict:
    """Read a state dict written by :func:`save_state_dict`, never unpickling objects."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


@dataclass
class TrainingResult:
    """What ``run_training`` produced."""

    bundle_dir: Path
    history: dict
    intensity_scale: float
    best_epoch: Optional[int]
    epochs_run: int
    output_files: dict = field(default_factory=dict)
    module: Any = None
    trainer: Any = None


def _restore_best(module, ckpt_callback) -> Optional[int]:
    """Load the best checkpoint's weights into ``module``; returns its epoch (None if none)."""
    import torch

    best = getattr(ckpt_callback, "best_model_path", "")
    if not best or not Path(best).is_file():
        return None
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    return int(ckpt.get("epoch", -1))


def _read_resume_checkpoint(path: Path) -> dict:
    """The Lightning checkpoint at ``path`` (plain tensors and containers only)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable training checkpoint ({exc}); start without "
                         "--resume") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path}: not a Lightning training checkpoint (no state_dict); start "
                         "without --resume")
    return ckpt


def check_resume_config(ckpt: dict, model_config: dict, path: Path) -> None:
    """``ValueError`` naming the differing ``model.*`` settings when the checkpoint at ``path``
    was written for another network than ``model_config`` (the run's ``config.model`` dict)."""
    saved = ((ckpt.get("hyper_parameters") or {}).get("config") or {}).get("model")
    if not isinstance(saved, dict):
        return
    check_same_model_config(saved, model_config, path)


def check_resume_state_dict(ckpt: dict, expected: dict, path: Path) -> None:
    """``ValueError`` naming missing, unexpected and differently shaped parameters when the
    checkpoint's weights do not fit the network built for this run (``expected`` state dict)."""
    saved = ckpt["state_dict"]
    problems = [f"{k} missing" for k in expected if k not in saved]
    problems += [f"{k} unexpected" for k in saved if k not in expected]
    problems += [f"{k}: checkpoint {tuple(saved[k].shape)}, now {tuple(v.shape)}"
                 for k, v in expected.items()
                 if k in saved and tuple(getattr(saved[k], "shape", ())) != tuple(v.shape)]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more"
                                           if len(problems) > 6 else "")
        raise ValueError(f"{path}: the checkpoint's weights do not fit this run's network "
                         f"({shown}); resume with the same model settings or start without "
                         "--resume")


def run_training(payload: TrainingPayload, train_data: Optional[PtychoData] = None,
                 test_data: Optional[PtychoData] = None,
                 extra_callbacks: Iterable[Any] = ()) -> TrainingResult:
    """Train one model from ``payload`` and write the bundle and reports (see module doc)."""
    from lightning import pytorch as pl

    from ptycho.bundle import write_bundle
    from ptycho_torch.config_bridge import (best_checkpoint_callback, last_checkpoint_path,
                                            trainer_kwargs)
    from ptycho_torch.data_module import PtychoDataModule
    from ptycho_torch.lightning_module import PtychoLightningModule

    cfg = payload.config
    out = Path(cfg.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = None
    if cfg.training.resume:
        ckpt_path = last_checkpoint_path(out)
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"resume requested but there is no checkpoint at {ckpt_path}; "
                                    "run without --resume first")
        resume_ckpt = _read_resume_checkpoint(ckpt_path)
        check_resume_config(resume_ckpt, to_dict(cfg)["model"], ckpt_path)
    pl.seed_everything(cfg.execution.seed, workers=True, verbose=False)
    dm = PtychoDataModule(payload, train_data, test_data)
    dm.setup()
    monitor = "val_loss" if dm.has_validation else "train_loss"
    module = PtychoLightningModule(payload, monitor=monitor)
    if ckpt_path is not None:
        check_resume_state_dict(resume_ckpt, module.state_dict(), ckpt_path)
        del resume_ckpt
    history_cb = make_history_callback()
    hint = make_resume_hint_callback(last_checkpoint_path(out))
    trainer = pl.Trainer(**trainer_kwargs(payload, monitor,
                                          [history_cb, hint, *extra_callbacks]))
    trainer.fit(module, datamodule=dm, ckpt_path=None if ckpt_path is None else str(ckpt_path),
                weights_only=True)

    history = history_cb.history
    ckpt_cb = best_checkpoint_callback(trainer.callbacks)
    best_epoch = _restore_best(module, ckpt_cb)
    scale = module.trained_intensity_scale()
    bundle_dir = out / BUNDLE_DIRNAME
    if not trainer.is_global_zero:
        # Every process of a distributed run gets here with the same weights; one writes.
        return TrainingResult(bundle_dir=bundle_dir, history=history, intensity_scale=scale,
                              best_epoch=best_epoch, epochs_run=len(history["epoch"]),
                              module=module, trainer=trainer)
    supervised = cfg.model.mode == "supervised"
    files = write_history(history, out, title="PyTorch training loss (supervised MAE)"
                          if supervised else "PyTorch training loss (Poisson NLL per pixel)",
                          full_nll=not supervised)
    from ptycho.atomic import atomic_write_json

    files["payload"] = atomic_write_json(out / "training_payload.json", payload.to_dict())
    stats_files = module.patch_stats_written()
    if stats_files:
        files["patch_stats"] = Path(stats_files["json"])
        files["patch_grid"] = Path(stats_files["png"])

    stopper = next((cb for cb in trainer.callbacks if isinstance(cb, pl.callbacks.EarlyStopping)),
                   None)
    summary = training_summary(
        history, best_epoch=best_epoch, monitor=monitor,
        best_monitored_loss=(float(ckpt_cb.best_model_score)
                             if ckpt_cb.best_model_score is not None else None),
        stopped_early=stopper is not None and stopper.stopped_epoch > 0,
        intensity_scale_initial=payload.stats.intensity_scale, intensity_scale_trained=scale)
    bundle_dir = write_bundle(
        bundle_dir, backend="torch", payload=payload,
        write_weights=lambda p: save_state_dict(module.model, p),
        weights_filename=WEIGHTS_FILENAME, intensity_scale=scale, history_summary=summary)
    files["bundle"] = bundle_dir
    return TrainingResult(bundle_dir=bundle_dir, history=history, intensity_scale=scale,
                          best_epoch=best_epoch, epochs_run=len(history["epoch"]),
                          output_files=files, module=module, trainer=trainer)
