"""Lightning module: the PtychoPINN model, its loss, optimiser and per-epoch history.

Built from the run's :class:`~ptycho.payload.TrainingPayload` (held, not copied or rebuilt):
the model from ``config.model``, the probe and the two scales from the payload, its
convolutions set to the seeded weights of :mod:`ptycho.initial_weights` (``execution.seed``;
the TensorFlow backend starts from the same numbers; a checkpoint loaded later replaces them);
Adam and the learning-rate schedule from ``config.training`` (ReduceLROnPlateau, or the
per-step cosine of :mod:`ptycho.lr_schedule` over all steps of the fit);
patch statistics from ``training.log_patch_stats`` and ``training.patch_stats_limit``.

Loss:
* unsupervised (PINN): mean over pixels of the Poisson NLL ``λ - K log λ`` with predicted counts
  ``λ = (s·Â)²`` and measured counts ``K = (X·f)²``;
* supervised: MAE of the network's amplitude and phase against the ground-truth patches, on the
  pixels the network predicts (the central N/2 x N/2 without ``probe_big``).
Logged per epoch: ``train_loss``, ``val_loss``, ``train_nll_full`` / ``val_nll_full`` (the full
Poisson NLL per pixel, with ``log K!``, comparable across runs), ``intensity_scale`` and ``lr``.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from lightning import pytorch as pl

from ptycho.config_bridge import (to_step_learning_rate, to_torch_optimizer_kwargs,
                                  to_torch_scheduler_kwargs)
from ptycho.initial_weights import initial_weights
from ptycho.payload import TrainingPayload
from ptycho_torch import helper
from ptycho_torch import weights as torch_weights
from ptycho_torch.model import ModelOutput, PtychoPINN

__all__ = ["PtychoLightningModule", "payload_hparams"]


def payload_hparams(payload: TrainingPayload) -> dict[str, Any]:
    """The payload as plain JSON-like hyperparameters (config, statistics, overrides, provenance;
    the probe is left out: it lives in the model's state)."""
    d = payload.to_dict()
    return {"config": d["config"], "stats": d["stats"], "overrides": d["overrides"],
            "provenance": d["provenance"]}


class PtychoLightningModule(pl.LightningModule):
    """Training wrapper around :class:`~ptycho_torch.model.PtychoPINN`.

    Parameters
    ----------
    payload : TrainingPayload
        The one payload of the run.
    monitor : str
        Metric the LR scheduler watches (``"val_loss"``, or ``"train_loss"`` without validation).
    """

    def __init__(self, payload: TrainingPayload, monitor: str = "val_loss") -> None:
        super().__init__()
        if not isinstance(payload, TrainingPayload):
            raise TypeError(f"payload must be a TrainingPayload, got {type(payload).__name__}")
        self.payload = payload
        self.monitor = monitor
        cfg = payload.config
        self.save_hyperparameters(payload_hparams(payload))
        self.model = PtychoPINN(cfg.model, payload.probe,
                                intensity_scale=payload.stats.intensity_scale,
                                normalization_factor=payload.stats.normalization_factor)
        torch_weights.import_weights(self.model, initial_weights(
            cfg.model, cfg.execution.seed, torch_weights.export_weights(self.model)))
        self.supervised = cfg.model.mode == "supervised"
        self.patch_logger = None
        if cfg.training.log_patch_stats:
            from ptycho.patch_stats import PatchStatsLogger

            self.patch_logger = PatchStatsLogger(cfg.training.output_dir, "torch",
                                                 cfg.model.gridsize,
                                                 limit=cfg.training.patch_stats_limit)

    # ------------------------------------------------------------------ forward and losses
    def forward(self, X: torch.Tensor, offsets: torch.Tensor) -> ModelOutput:
        return self.model(X, offsets)

    def _supervised_loss(self, out: ModelOutput, gt: torch.Tensor) -> torch.Tensor:
        dtype = out.patch_amp.dtype
        gt = gt.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
        support = torch.ones_like(out.patch_amp[0, 0]) if self.model.probe_big \
            else self.model.central.to(dtype)
        n = support.sum() * out.patch_amp.shape[0] * out.patch_amp.shape[1]
        amp_err = (torch.abs(out.patch_amp - torch.abs(gt)) * support).sum() / n
        phase_err = (torch.abs(out.patch_phase - torch.angle(gt)) * support).sum() / n
        return amp_err + phase_err

    def _step(self, batch: Any, phase: str, batch_idx: int) -> torch.Tensor:
        X, offsets = batch[0], batch[1]
        out = self.model(X, offsets)
        counts = self.model.target_counts(X.to(out.counts.dtype))
        nll = helper.poisson_nll(out.counts, counts).mean()
        loss = self._supervised_loss(out, batch[2]) if self.supervised else nll
        B = X.shape[0]
        self.log(f"{phase}_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=B)
        with torch.no_grad():
            full = helper.poisson_nll_full(out.counts.detach(), counts).mean()
        self.log(f"{phase}_nll_full", full, on_step=False, on_epoch=True, batch_size=B)
        if self.patch_logger is not None and not self._sanity_checking() \
                and self.patch_logger.wants(phase):
            self.patch_logger.log(out.obj.detach(), phase, batch_idx, epoch=self.current_epoch)
        return loss

    def _sanity_checking(self) -> bool:
        trainer = self._trainer
        return bool(trainer is not None and trainer.sanity_checking)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train", batch_idx)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, batch "
                f"{batch_idx}; lower the learning rate or check the data")
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val", batch_idx)

    def on_train_epoch_end(self) -> None:
        self.log("intensity_scale", self.model.intensity_scale.detach().float(), on_epoch=True)
        opt = self.optimizers(use_pl_optimizer=False)
        if opt is not None:
            self.log("lr", float(opt.param_groups[0]["lr"]), on_epoch=True)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.payload.config
        optimizer = torch.optim.Adam(self.parameters(), **to_torch_optimizer_kwargs(cfg))
        if cfg.training.lr_schedule != "plateau":
            rate = to_step_learning_rate(cfg, self._total_training_steps())
            peak = cfg.training.learning_rate
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: rate(s) / peak)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, **to_torch_scheduler_kwargs(cfg))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor,
                                 "interval": "epoch", "frequency": 1, "strict": True}}

    def _total_training_steps(self) -> int:
        """Optimiser steps of the whole fit: ``max_epochs`` times the data module's steps per
        epoch of one process. Not ``trainer.estimated_stepping_batches``, which builds the
        training loader before a resumed fit restores its epoch and so starts the batch order
        at epoch 0."""
        trainer = self.trainer
        return int(trainer.max_epochs) * trainer.datamodule.steps_per_epoch(trainer.world_size)

    # ------------------------------------------------------------------ results
    def trained_intensity_scale(self) -> float:
        """The model's current intensity scale (the value to store in the bundle)."""
        value = self.model.intensity_scale_value()
        if not math.isfinite(value) or value <= 0:
            raise FloatingPointError(f"the trained intensity scale is {value}; refusing to use it")
        return value

    def patch_stats_written(self) -> Optional[dict]:
        """Write the collected patch statistics (if enabled and any were logged)."""
        if self.patch_logger is None or not self.patch_logger.entries:
            return None
        return self.patch_logger.write()
