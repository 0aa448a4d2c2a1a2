"""Seeded validation split and per-epoch training order shared by both backends (NumPy only).

* :func:`split_groups` holds out ``validation_count(n, fraction)`` of ``n`` groups (used when
  no test file is given): ``round(fraction·n)``, at least 1 and at most ``n - 1``; none when
  ``n < 2``. The held-out groups are the first ones of ``default_rng(seed).permutation(n)``.
* :func:`epoch_order` is the order in which the training groups are visited in one epoch, a
  permutation drawn from child ``epoch`` of ``SeedSequence(seed)`` (``SeedSequence(seed).spawn``;
  a stream independent of ``default_rng(seed)``, which draws the split and the initial
  weights). It depends only on ``(n, seed, epoch)``, so a resumed run visits the same batches
  as an uninterrupted one.

The TensorFlow loop (``ptycho.tf_training.fit``) and the PyTorch sampler
(``ptycho_torch.data_module.EpochOrderSampler``) both call these, so one seed gives both
backends the same validation groups and the same batches, in the same order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["validation_count", "split_groups", "epoch_order"]


def _check_seed(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def validation_count(n: int, fraction: float) -> int:
    """Groups held out for validation out of ``n``: ``round(fraction·n)`` clipped to
    ``[1, n - 1]``; 0 when ``n < 2``."""
    n = int(n)
    if n < 2:
        return 0
    return min(n - 1, max(1, int(round(float(fraction) * n))))


def split_groups(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train_idx, val_idx)`` of ``n`` groups, each sorted int64 (see module doc)."""
    seed = _check_seed("seed", seed)
    n_val = validation_count(n, fraction)
    perm = np.random.default_rng(seed).permutation(int(n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(n)`` (int64) in which epoch ``epoch`` (0-based) visits the
    training groups:
    ``default_rng(SeedSequence(seed, spawn_key=(epoch,))).permutation(n)``."""
    seq = np.random.SeedSequence(_check_seed("seed", seed),
                                 spawn_key=(_check_seed("epoch", epoch),))
    return np.random.default_rng(seq).permutation(int(n))
