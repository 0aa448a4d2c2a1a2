"""Payload → Lightning ``Trainer`` arguments, callbacks and logger.

Built on :func:`ptycho.config_bridge.to_lightning_trainer_kwargs` (max_epochs, accelerator,
devices, strategy, precision, deterministic, default_root_dir) and adds the objects only the
PyTorch backend knows: the metrics logger (``execution.logger``: none | csv | tensorboard), the
checkpoint callbacks (``<output_dir>/checkpoints``, ``last.ckpt`` after every epoch plus the best
epoch by the monitored loss), early stopping (``training.early_stopping_patience``) and the
progress bar. ``last_checkpoint_path`` names the checkpoint ``--resume`` continues from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from ptycho.config import ConfigError
from ptycho.config_bridge import to_lightning_trainer_kwargs
from ptycho.payload import TrainingPayload

__all__ = ["CHECKPOINT_DIR", "LAST_CHECKPOINT", "checkpoint_dir", "last_checkpoint_path",
           "build_logger", "build_callbacks", "best_checkpoint_callback", "trainer_kwargs",
           "resolve_accelerator"]

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


def checkpoint_dir(output_dir: str | Path) -> Path:
    """``<output_dir>/checkpoints``."""
    return Path(output_dir) / CHECKPOINT_DIR


def last_checkpoint_path(output_dir: str | Path) -> Path:
    """``<output_dir>/checkpoints/last.ckpt``: where ``--resume`` continues from."""
    return checkpoint_dir(output_dir) / LAST_CHECKPOINT


def resolve_accelerator(accelerator: str) -> str:
    """``auto`` | ``cpu`` | ``gpu`` → the torch device type to use (``"cuda"`` or ``"cpu"``).

    ``gpu`` without a visible CUDA device is an error (never a silent fallback to the CPU).
    """
    import torch

    if accelerator == "cpu":
        return "cpu"
    if accelerator == "gpu":
        if not torch.cuda.is_available():
            raise ConfigError("execution.accelerator: 'gpu' was requested but torch sees no CUDA "
                              f"device (torch {torch.__version__}); use --accelerator cpu or auto")
        return "cuda"
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    raise ValueError(f"accelerator must be auto, cpu or gpu; got {accelerator!r}")


def build_logger(payload: TrainingPayload) -> Any:
    """The Lightning logger for ``execution.logger``: ``False`` for none, else a CSV or
    TensorBoard logger writing under ``<output_dir>/logs``."""
    kind = payload.config.execution.logger
    out = payload.config.training.output_dir
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=out, name="logs")
    if kind == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None \
                and importlib.util.find_spec("tensorboardX") is None:
            raise ConfigError("execution.logger: 'tensorboard' needs the tensorboard package, "
                              "which is not installed; use --logger csv or install tensorboard")
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=out, name="logs")
    raise ValueError(f"execution.logger must be none, csv or tensorboard; got {kind!r}")


def build_callbacks(payload: TrainingPayload, monitor: str) -> list:
    """Checkpointing, early stopping and the progress bar.

    Two checkpoint callbacks: ``best-epoch=E.ckpt`` follows the monitored loss, and
    ``last.ckpt`` is rewritten after every epoch whether or not the loss improved (Lightning's
    own ``save_last`` copies only when the best checkpoint changes, so a resumed run would
    restart from the last improvement).
    """
    from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar

    from ptycho_torch.checkpoints import RelocatableModelCheckpoint

    t = payload.config.training
    dirpath = str(checkpoint_dir(t.output_dir))
    best = RelocatableModelCheckpoint(dirpath=dirpath, filename="best-{epoch}", monitor=monitor,
                                      mode="min", save_top_k=1, save_last=False)
    last = RelocatableModelCheckpoint(dirpath=dirpath, filename=Path(LAST_CHECKPOINT).stem,
                                      monitor=None, save_top_k=1, every_n_epochs=1,
                                      enable_version_counter=False)
    stop = EarlyStopping(monitor=monitor, mode="min", patience=t.early_stopping_patience,
                         check_finite=True)
    return [best, last, stop, TQDMProgressBar(refresh_rate=1)]


def best_checkpoint_callback(callbacks: Iterable[Any]) -> Any:
    """The checkpoint callback of :func:`build_callbacks` that follows the monitored loss."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    return next(c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor is not None)


def trainer_kwargs(payload: TrainingPayload, monitor: str = "val_loss",
                   extra_callbacks: Optional[Iterable[Any]] = None) -> dict[str, Any]:
    """All keyword arguments for ``lightning.pytorch.Trainer`` of this payload's run.

    ``accelerator`` is resolved first so that ``gpu`` without CUDA fails with a clear message.
    Sanity validation steps are off (the first real epoch validates anyway).
    """
    kwargs = to_lightning_trainer_kwargs(payload.config)
    resolve_accelerator(kwargs["accelerator"])
    callbacks = build_callbacks(payload, monitor)
    if extra_callbacks:
        callbacks.extend(extra_callbacks)
    kwargs.update(logger=build_logger(payload), callbacks=callbacks, enable_progress_bar=True,
                  enable_checkpointing=True, num_sanity_val_steps=0, log_every_n_steps=1,
                  enable_model_summary=False)
    return kwargs
