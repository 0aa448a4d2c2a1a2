"""A Lightning ``ModelCheckpoint`` whose restored state follows the run directory.

Lightning restores the best score and the paths of the best checkpoints only when the
checkpoint directory is spelled exactly as when the state was saved; otherwise it forgets the
best score, so the first resumed epoch counts as the best one and the bundle gets its weights.
A run directory that was moved or copied, or named by another (relative or absolute) path, must
resume the same way as one left in place: the saved paths are mapped into the current directory
by their file names.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["RelocatableModelCheckpoint"]


class RelocatableModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that reads back its state from a checkpoint saved under another path.

    Its ``state_key`` is that of a plain ``ModelCheckpoint`` with the same settings, so
    checkpoints written with either class restore into the other.
    """

    @property
    def state_key(self) -> str:
        key = super().state_key
        name = type(self).__qualname__
        return "ModelCheckpoint" + key[len(name):] if key.startswith(name) else key

    def _relocated(self, path: Any) -> Any:
        """``path`` (a checkpoint file of the saved run) inside this callback's directory."""
        if not path or self.dirpath is None:
            return path
        return os.path.join(self.dirpath, os.path.basename(str(path)))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        if self.dirpath is not None and state.get("dirpath", self.dirpath) != self.dirpath:
            state["dirpath"] = self.dirpath
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state:
                    state[key] = self._relocated(state[key])
            if isinstance(state.get("best_k_models"), dict):
                state["best_k_models"] = {self._relocated(p): v
                                          for p, v in state["best_k_models"].items()}
        super().load_state_dict(state)
