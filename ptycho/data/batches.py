"""Grouped model inputs read batch by batch from a streamed scan (inference).

:func:`prepare_streamed_groups` groups a :class:`~ptycho.data.stream.StreamedScan` exactly like
:func:`ptycho.data.prepare.prepare_grouped_arrays` (same ``group_scan`` call, so the same
groups, offsets and positions) but keeps only the indices: :meth:`StreamedGroups.inputs` reads
one batch's patterns from the scan's pattern source and normalises them, giving the same values
as the matching slice of ``GroupedArrays.X``. Memory is O(G) small arrays plus one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ptycho.data.prepare import check_normalization_factor
from ptycho.grouping import DEFAULT_K, GroupCounts, group_scan

__all__ = ["StreamedGroups", "prepare_streamed_groups"]


@dataclass(frozen=True, eq=False)
class StreamedGroups(GroupCounts):
    """Groups of a streamed scan; the attributes are those of ``GroupedArrays`` without ``X``.

    Attributes:
        patterns: the scan's pattern source (float32 amplitude on ``gather``).
        offsets: (G, C, 2) float32 member offsets (dy, dx) from the group centre, object pixels.
        positions: (G, C, 2) float64 absolute member positions (y, x), object pixels.
        nn_indices: (G, C) int64 indices of the members in the scan.
        coords_offsets: (G, 2) float64 group centres (y, x).
        normalization_factor: the divisor applied to the amplitudes by :meth:`inputs`.
        gridsize: g, with C = g**2.
    """

    patterns: Any
    offsets: np.ndarray
    positions: np.ndarray
    nn_indices: np.ndarray
    coords_offsets: np.ndarray
    normalization_factor: float
    gridsize: int

    @property
    def N(self) -> int:
        """Pattern side length in pixels."""
        return int(self.patterns.N)

    def inputs(self, groups) -> np.ndarray:
        """(B, C, N, N) float32 normalised amplitudes of the groups ``groups`` (slice or ints),
        each distinct pattern read once from the source."""
        amp = self.patterns.gather(self.nn_indices[groups])
        return (amp / np.float32(self.normalization_factor)).astype(np.float32, copy=False)


def prepare_streamed_groups(scan, gridsize: int, normalization_factor: float,
                            n_groups: int | None = None, K: int | None = DEFAULT_K,
                            seed: int = 0) -> StreamedGroups:
    """Group the positions of ``scan`` (a ``StreamedScan``); arguments as for
    ``prepare_grouped_arrays``.

    Raises:
        ValueError: invalid normalisation factor or grouping arguments.
    """
    factor = check_normalization_factor(normalization_factor)
    groups = group_scan(scan, gridsize, n_groups=n_groups, K=K, seed=seed)
    nn = groups.nn_indices
    positions = scan.positions[nn]
    offsets = groups.coords_relative.astype(np.float32)
    for arr in (positions, offsets):
        arr.setflags(write=False)
    return StreamedGroups(patterns=scan.patterns, offsets=offsets, positions=positions,
                          nn_indices=nn, coords_offsets=groups.coords_offsets,
                          normalization_factor=factor, gridsize=groups.gridsize)
