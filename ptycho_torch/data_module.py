"""Lightning data module: grouped, normalised diffraction data for training and validation.

The module is built from the run's :class:`~ptycho.payload.TrainingPayload` (never from loose
arguments), so grouping (``n_groups``, ``K``, ``gridsize``, ``seed``), batch size and worker
count are exactly the payload's. Amplitudes are divided by the payload's normalisation factor
(the training data's), so training and validation inputs share one scale.

Splits: with a test file, every training group trains and the test file's groups validate;
without one, ``ptycho.sampling.split_groups`` holds out a seeded ``validation_fraction`` of the
training groups (at least one group, when there are at least two). Training batches follow
``ptycho.sampling.epoch_order`` (:class:`EpochOrderSampler`), the TensorFlow backend's order.
Each batch is a tuple ``(X, offsets)`` or, in supervised mode, ``(X, offsets, gt)``:
X (B, C, N, N) float32, offsets (B, C, 2) float32 (dy, dx), gt (B, C, N, N) complex64
ground-truth object patches.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional

import numpy as np
import torch
from lightning import pytorch as pl
from torch.utils.data import DataLoader, Sampler, TensorDataset

from ptycho.config_bridge import to_dataloader_kwargs
from ptycho.data.contract import PtychoData, load_npz
from ptycho.data.prepare import GroupedArrays, prepare_grouped_arrays, prepare_validation_arrays
from ptycho.payload import TrainingPayload
from ptycho.sampling import epoch_order, split_groups

__all__ = ["PtychoDataModule", "EpochOrderSampler", "grouped_dataset"]


def grouped_dataset(grouped: GroupedArrays, with_ground_truth: bool = False) -> TensorDataset:
    """A ``TensorDataset`` of (X, offsets[, gt]) from prepared arrays (copied into torch)."""
    tensors = [torch.from_numpy(np.array(grouped.X, dtype=np.float32)),
               torch.from_numpy(np.array(grouped.offsets, dtype=np.float32))]
    if with_ground_truth:
        if grouped.gt_patches is None:
            raise ValueError("supervised mode needs ground-truth patches, but the prepared "
                             "arrays hold none (the data file has no objectGuess)")
        tensors.append(torch.from_numpy(np.array(grouped.gt_patches, dtype=np.complex64)))
    return TensorDataset(*tensors)


class EpochOrderSampler(Sampler[int]):
    """Visits ``range(n)`` in ``ptycho.sampling.epoch_order(n, seed, epoch)``, the order the
    TensorFlow loop uses; Lightning sets ``epoch`` through :meth:`set_epoch` before each epoch
    (also through its ``DistributedSamplerWrapper``, which then gives each of R processes every
    R-th element of this order)."""

    def __init__(self, n: int, seed: int, epoch: int = 0) -> None:
        self.n, self.seed = int(n), int(seed)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of epoch ``epoch`` (0-based) for the next iteration."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.n, self.seed, self.epoch).tolist())

    def __len__(self) -> int:
        return self.n


def _subset(g: GroupedArrays, idx: np.ndarray) -> GroupedArrays:
    return GroupedArrays(
        X=g.X[idx], offsets=g.offsets[idx], positions=g.positions[idx],
        nn_indices=g.nn_indices[idx],
        gt_patches=None if g.gt_patches is None else g.gt_patches[idx],
        coords_offsets=g.coords_offsets[idx], normalization_factor=g.normalization_factor,
        gridsize=g.gridsize)


class PtychoDataModule(pl.LightningDataModule):
    """Training and validation loaders for one payload.

    Parameters
    ----------
    payload : TrainingPayload
        Config (data, model, training, execution) and the normalisation factor.
    train_data, test_data : PtychoData, optional
        Already-loaded scans; when omitted they are read from ``data.train_data_file`` /
        ``data.test_data_file``.
    """

    def __init__(self, payload: TrainingPayload, train_data: Optional[PtychoData] = None,
                 test_data: Optional[PtychoData] = None) -> None:
        super().__init__()
        if not isinstance(payload, TrainingPayload):
            raise TypeError(f"payload must be a TrainingPayload, got {type(payload).__name__}")
        self.payload = payload
        self._train_data = train_data
        self._test_data = test_data
        self.train_arrays: Optional[GroupedArrays] = None
        self.val_arrays: Optional[GroupedArrays] = None
        cfg = payload.config
        self.supervised = cfg.model.mode == "supervised"
        self.loader_kwargs = to_dataloader_kwargs(cfg, "training")
        self.seed = cfg.execution.seed

    # ------------------------------------------------------------------ data
    @staticmethod
    def _load(data: Optional[PtychoData], path: Optional[str]) -> Optional[PtychoData]:
        if data is not None:
            return data
        if path is None:
            return None
        return load_npz(path)

    def _group(self, data: PtychoData, n_groups: Optional[int]) -> GroupedArrays:
        cfg = self.payload.config
        return prepare_grouped_arrays(
            data, cfg.model.gridsize, self.payload.stats.normalization_factor,
            n_groups=n_groups, K=cfg.data.K, seed=cfg.data.seed,
            with_ground_truth=self.supervised, interpolation=cfg.model.interpolation)

    def setup(self, stage: Optional[str] = None) -> None:
        """Group the data once (later calls are no-ops)."""
        if self.train_arrays is not None:
            return
        cfg = self.payload.config
        train = self._load(self._train_data, cfg.data.train_data_file)
        if train is None:
            raise ValueError("no training data: set data.train_data_file (--train_data_file)")
        if train.N != cfg.model.N:
            raise ValueError(f"{train.source}: patterns are {train.N}x{train.N} but model.N is "
                             f"{cfg.model.N}")
        grouped = self._group(train, cfg.data.n_groups)
        test = self._load(self._test_data, cfg.data.test_data_file)
        if test is not None:
            if test.N != cfg.model.N:
                raise ValueError(f"{test.source}: patterns are {test.N}x{test.N} but model.N is "
                                 f"{cfg.model.N}")
            self.train_arrays = grouped
            self.val_arrays = prepare_validation_arrays(test, cfg)
        else:
            tr, va = split_groups(len(grouped), cfg.training.validation_fraction, cfg.data.seed)
            self.train_arrays = _subset(grouped, tr)
            self.val_arrays = _subset(grouped, va) if len(va) else None

    @property
    def has_validation(self) -> bool:
        """Whether a validation set exists (call ``setup`` first)."""
        return self.val_arrays is not None and len(self.val_arrays) > 0

    # ------------------------------------------------------------------ loaders
    def _loader(self, grouped: GroupedArrays, sampler: Optional[Sampler] = None) -> DataLoader:
        kwargs: dict[str, Any] = dict(self.loader_kwargs)
        workers = kwargs["num_workers"]
        return DataLoader(grouped_dataset(grouped, self.supervised), sampler=sampler,
                          shuffle=False, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available(), drop_last=False, **kwargs)

    def _current_epoch(self) -> int:
        # A resumed fit starts its first iterator (and worker processes draw indices at once)
        # before Lightning calls set_epoch, so the sampler starts at the restored epoch.
        trainer = getattr(self, "trainer", None)
        try:
            return int(trainer.fit_loop.epoch_progress.current.processed)
        except AttributeError:
            return 0

    def train_dataloader(self) -> DataLoader:
        """Training batches in the order of :class:`EpochOrderSampler` (``execution.seed``)."""
        self.setup()
        sampler = EpochOrderSampler(len(self.train_arrays), self.seed, self._current_epoch())
        return self._loader(self.train_arrays, sampler)

    def val_dataloader(self) -> Any:
        self.setup()
        if not self.has_validation:
            return []
        return self._loader(self.val_arrays)

    def steps_per_epoch(self, processes: int = 1) -> int:
        """Optimiser steps per epoch of each of ``processes`` processes (a distributed run gives
        each ``ceil(n / processes)`` of the n training groups; the last partial batch
        included)."""
        self.setup()
        per_process = math.ceil(len(self.train_arrays) / max(int(processes), 1))
        return math.ceil(per_process / self.loader_kwargs["batch_size"])
