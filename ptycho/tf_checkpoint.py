"""Per-epoch training checkpoints of the TensorFlow backend, read by ``--resume``.

After every completed epoch :func:`ptycho.tf_training.fit` writes ``checkpoints/last.npz`` in
the output directory, atomically (a temporary file renamed into place), so an interruption at
any moment leaves the previous epoch's checkpoint intact. One NPZ of plain arrays, read with
``allow_pickle=False`` (no code runs when it is loaded):

* ``weights_<i>``: the model's weights (``model.get_weights()`` order) after the epoch;
* ``best_<i>``: the weights of the best epoch by the monitored loss so far (absent before one);
* ``optimizer_<i>``: the optimiser's variables (step counter, learning rate, Adam moments);
* ``state``: a JSON string — epochs done, the history so far, the best loss and epoch, the
  learning-rate-plateau and early-stopping counters, and the model section of the config
  (a resumed run must build the same network).

Importing this module imports neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

__all__ = ["CHECKPOINT_RELPATH", "CALLBACK_STATE_ATTRIBUTES", "TrainingState",
           "checkpoint_path", "require_checkpoint", "save_checkpoint", "load_checkpoint",
           "check_same_model"]

CHECKPOINT_RELPATH = Path("checkpoints") / "last.npz"
# Counters of keras.callbacks.ReduceLROnPlateau / EarlyStopping that carry over an epoch boundary.
CALLBACK_STATE_ATTRIBUTES = ("wait", "best", "cooldown_counter", "best_epoch", "stopped_epoch")
_FORMAT = "ptychopinn-tf-checkpoint-1"


def checkpoint_path(output_dir) -> Path:
    """``<output_dir>/checkpoints/last.npz``: where the TensorFlow backend resumes from."""
    return Path(output_dir) / CHECKPOINT_RELPATH


def require_checkpoint(path) -> Path:
    """``path`` as a ``Path``; ``FileNotFoundError`` saying how to start when it is no file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume requested but there is no checkpoint at {path}; "
                                "run without --resume first")
    return path


@dataclass
class TrainingState:
    """Everything a resumed :func:`ptycho.tf_training.fit` needs to continue after an epoch.

    ``epochs_done`` completed epochs; ``history`` per-epoch lists (``HISTORY_KEYS``);
    ``best`` the best monitored loss (``inf`` before any) reached at 0-based ``best_epoch``;
    ``callbacks`` one dict of counters per callback, in callback order; ``model_config`` the
    config's model section as a plain dict.
    """

    epochs_done: int
    history: dict
    best: float
    best_epoch: int
    weights: list
    best_weights: Optional[list]
    optimizer: list
    callbacks: list = field(default_factory=list)
    model_config: dict = field(default_factory=dict)


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _plain(mapping: Mapping[str, Any]) -> dict:
    """``mapping`` as it reads back from JSON (tuples become lists), so saved and live configs
    compare equal."""
    return json.loads(json.dumps(dict(mapping)))


def save_checkpoint(path, state: TrainingState) -> Path:
    """Write ``state`` to ``path`` atomically; returns the path."""
    from ptycho.atomic import atomic_save_npz

    meta = {"format": _FORMAT, "epochs_done": int(state.epochs_done),
            "best": _json_value(state.best), "best_epoch": int(state.best_epoch),
            "history": {k: [_json_value(v) for v in vals] for k, vals in state.history.items()},
            "callbacks": [{k: _json_value(v) for k, v in cb.items()} for cb in state.callbacks],
            "model_config": _plain(state.model_config),
            "n_weights": len(state.weights), "n_optimizer": len(state.optimizer),
            "has_best": state.best_weights is not None}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    arrays = {"state": np.array(json.dumps(meta))}
    arrays.update({f"weights_{i}": np.asarray(w) for i, w in enumerate(state.weights)})
    arrays.update({f"optimizer_{i}": np.asarray(v) for i, v in enumerate(state.optimizer)})
    if state.best_weights is not None:
        arrays.update({f"best_{i}": np.asarray(w) for i, w in enumerate(state.best_weights)})
    return atomic_save_npz(path, arrays)


def load_checkpoint(path) -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` when there is none and ``ValueError`` naming the file when it
    is not a readable checkpoint of this format.
    """
    path = require_checkpoint(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["state"][()]))
            if meta.get("format") != _FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            weights = [f[f"weights_{i}"] for i in range(meta["n_weights"])]
            optimizer = [f[f"optimizer_{i}"] for i in range(meta["n_optimizer"])]
            best = ([f[f"best_{i}"] for i in range(meta["n_weights"])]
                    if meta["has_best"] else None)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable TensorFlow training checkpoint "
                         f"({type(exc).__name__}: {exc}); delete it to start afresh") from exc
    history = {k: [math.nan if v is None else v for v in vals]
               for k, vals in meta["history"].items()}
    return TrainingState(epochs_done=int(meta["epochs_done"]), history=history,
                         best=math.inf if meta["best"] is None else float(meta["best"]),
                         best_epoch=int(meta["best_epoch"]), weights=weights,
                         best_weights=best, optimizer=optimizer,
                         callbacks=list(meta["callbacks"]), model_config=meta["model_config"])


def check_same_model(state: TrainingState, model_config: Mapping[str, Any], path) -> None:
    """``ValueError`` naming the differing keys when the checkpoint's network differs."""
    from ptycho.config import check_same_model_config

    check_same_model_config(state.model_config, _plain(model_config), path)
