"""Model-ready arrays: grouped, normalised diffraction amplitudes with their offsets.

Both backends train and infer on the same :class:`GroupedArrays`, built once from a validated
:class:`~ptycho.data.contract.PtychoData` by :func:`prepare_grouped_arrays`. The layout is
channels-first ``(G, C, N, N)``; the TensorFlow backend transposes to ``(G, N, N, C)`` itself.
Target photon counts for the Poisson loss are ``(X * normalization_factor) ** 2``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptycho.data.contract import DataContractError, PtychoData
from ptycho.grouping import DEFAULT_K, GroupCounts, group_scan

__all__ = ["GroupedArrays", "check_normalization_factor", "prepare_grouped_arrays",
           "prepare_validation_arrays", "iter_grouped_batches"]


@dataclass(frozen=True, eq=False)
class GroupedArrays(GroupCounts):
    """Grouped model inputs for one scan.

    Attributes:
        X: (G, C, N, N) float32 diffraction amplitudes divided by ``normalization_factor``.
        offsets: (G, C, 2) float32 member offsets (dy, dx) from the group centre, object pixels
            (``coords_relative``; what the model translates each patch by).
        positions: (G, C, 2) float64 absolute member positions (y, x), object pixels.
        nn_indices: (G, C) int64 indices of the members in the source scan.
        gt_patches: (G, C, N, N) complex64 ground-truth object patches cut from ``objectGuess``
            at ``positions`` (for supervised training and evaluation), or ``None``.
        coords_offsets: (G, 2) float64 group centres (y, x).
        normalization_factor: the input normalisation the amplitudes were divided by.
        gridsize: g, with C = g**2.
    """

    X: np.ndarray
    offsets: np.ndarray
    positions: np.ndarray
    nn_indices: np.ndarray
    gt_patches: np.ndarray | None
    coords_offsets: np.ndarray
    normalization_factor: float
    gridsize: int

    @property
    def N(self) -> int:
        """Pattern side length in pixels."""
        return int(self.X.shape[2])


def check_normalization_factor(value) -> float:
    """``value`` as a positive finite float, else ``ValueError`` naming it."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"normalization_factor must be a positive finite number, got {value!r}")
    try:
        factor = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"normalization_factor must be a positive finite number, "
                         f"got {value!r}") from None
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"normalization_factor must be a positive finite number, got {factor}")
    return factor


def prepare_grouped_arrays(data: PtychoData, gridsize: int, normalization_factor: float,
                           n_groups: int | None = None, K: int | None = DEFAULT_K, seed: int = 0,
                           with_ground_truth: bool = False,
                           interpolation: str = "bilinear") -> GroupedArrays:
    """Group the patterns of ``data`` and normalise their amplitudes.

    Args:
        data: a validated scan.
        gridsize: g >= 1; C = g**2 patterns per group.
        normalization_factor: positive, finite divisor of the amplitudes (see
            ``ptycho.physics.normalization_factor``).
        n_groups, K, seed: passed to :func:`ptycho.grouping.group_patterns`.
        with_ground_truth: also cut ``gt_patches`` from ``data.object`` (required then).
        interpolation: ``"bilinear"`` or ``"fourier"``, for ground-truth patches at sub-pixel
            positions.

    Raises:
        DataContractError: ``with_ground_truth`` without an ``objectGuess`` in the data.
        ValueError: invalid normalisation factor or grouping arguments.
    """
    if not isinstance(data, PtychoData):
        raise TypeError(f"data must be a PtychoData, got {type(data).__name__}")
    factor = check_normalization_factor(normalization_factor)
    if with_ground_truth and data.object is None:
        raise DataContractError(
            f"{data.source}: key 'objectGuess': ground-truth patches were requested "
            "(with_ground_truth=True, e.g. supervised mode) but the data has no objectGuess")

    groups = group_scan(data, gridsize, n_groups=n_groups, K=K, seed=seed)
    nn = groups.nn_indices
    X = (data.diffraction[nn] / np.float32(factor)).astype(np.float32, copy=False)
    positions = data.positions[nn]
    offsets = groups.coords_relative.astype(np.float32)

    gt = None
    if with_ground_truth:
        from ptycho.physics import extract_patches

        # Cut each used pattern once, then gather: groups may share members.
        used, inverse = np.unique(nn, return_inverse=True)
        patches = extract_patches(data.object, data.positions[used], data.N,
                                  interpolation=interpolation)
        gt = np.asarray(patches, dtype=np.complex64)[inverse.reshape(nn.shape)]

    for arr in (X, offsets, positions, gt):
        if arr is not None:
            arr.setflags(write=False)
    return GroupedArrays(X=X, offsets=offsets, positions=positions, nn_indices=nn,
                         gt_patches=gt, coords_offsets=groups.coords_offsets,
                         normalization_factor=factor, gridsize=groups.gridsize)


def prepare_validation_arrays(data: PtychoData, config) -> GroupedArrays:
    """A separate validation scan grouped like the training data of ``config`` (a
    ``PtychoConfig``), every pattern a group seed, ground-truth patches in supervised mode.

    Its amplitudes are divided by its own normalisation factor, not the training scan's: input
    normalisation is per dataset, as inference will normalise the scan.
    """
    from ptycho.physics import normalization_factor

    m, d = config.model, config.data
    return prepare_grouped_arrays(data, m.gridsize, normalization_factor(data.diffraction),
                                  K=d.K, seed=d.seed, with_ground_truth=m.mode == "supervised",
                                  interpolation=m.interpolation)


def iter_grouped_batches(grouped: GroupedArrays | Any, batch_size: int) -> Iterator[slice]:
    """An iterator of ``slice`` objects over the groups in order, ``batch_size`` at a time.

    Every group is covered exactly once; the last batch holds the remainder when ``batch_size``
    does not divide the number of groups. ``grouped`` may be a :class:`GroupedArrays` or any
    object with ``len()``.
    """
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    total, step = len(grouped), int(batch_size)
    return (slice(start, min(start + step, total)) for start in range(0, total, step))
