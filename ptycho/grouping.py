"""Grouping of scan positions into sets of neighbouring patterns (gridsize > 1).

With ``gridsize = g`` the model sees ``C = g**2`` patterns at once and reassembles their predicted
object patches on one canvas per group, so neighbouring patches must agree where they overlap.
A group is built from a *seed* pattern: its ``K`` nearest neighbours by scan position (the seed
included) are found with a KD-tree and ``C`` of them are drawn at random. Each group stores the
member indices, the group centre (mean member position) and each member's position relative to
that centre, which is the offset the model translates the patch by.

All positions are ``(y, x)`` in object pixels, row first; offsets are ``(dy, dx)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GroupCounts", "GroupedData", "group_patterns", "DEFAULT_K"]

DEFAULT_K = 6
# Above this many (seed, combination) candidates the pool of distinct groups is sampled by
# rejection instead of being enumerated.
_ENUMERATION_LIMIT = 500_000
_MAX_REJECTION_ROUNDS = 200


class GroupCounts:
    """``n_groups``, ``C`` and ``len()`` of any groups object with a ``(G, C)`` ``nn_indices``."""

    nn_indices: np.ndarray

    @property
    def n_groups(self) -> int:
        """Number of groups G."""
        return int(self.nn_indices.shape[0])

    @property
    def C(self) -> int:
        """Patterns per group, gridsize**2."""
        return int(self.nn_indices.shape[1])

    def __len__(self) -> int:
        return self.n_groups


@dataclass(frozen=True, eq=False)
class GroupedData(GroupCounts):
    """Groups of C neighbouring patterns.

    Attributes:
        nn_indices: (G, C) int64 pattern indices of each group's members, ascending within a group.
        coords_offsets: (G, 2) float64 group centres (y, x) = mean position of the members.
        coords_relative: (G, C, 2) float64 member offsets (dy, dx) = member position - centre.
        gridsize: g, with C = g**2.
    """

    nn_indices: np.ndarray
    coords_offsets: np.ndarray
    coords_relative: np.ndarray
    gridsize: int


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _positions(xcoords: Any, ycoords: Any) -> np.ndarray:
    x = np.asarray(xcoords, dtype=np.float64)
    y = np.asarray(ycoords, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"xcoords and ycoords must be 1-D arrays of equal length, got shapes "
                         f"{x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("xcoords and ycoords are empty; there are no patterns to group")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("xcoords and ycoords must be finite (found NaN or Inf)")
    return np.stack([y, x], axis=1)


def _finish(positions: np.ndarray, nn_indices: np.ndarray, gridsize: int) -> GroupedData:
    nn = np.ascontiguousarray(nn_indices, dtype=np.int64)
    member_pos = positions[nn]                       # (G, C, 2)
    centres = member_pos.mean(axis=1)                # (G, 2)
    relative = member_pos - centres[:, None, :]      # (G, C, 2)
    for arr in (nn, centres, relative):
        arr.setflags(write=False)
    return GroupedData(nn_indices=nn, coords_offsets=centres, coords_relative=relative,
                       gridsize=gridsize)


def _neighbours(positions: np.ndarray, K: int) -> np.ndarray:
    """(M, K) indices of each pattern's K nearest patterns, the pattern itself always included."""
    from scipy.spatial import cKDTree

    M = len(positions)
    _, idx = cKDTree(positions).query(positions, k=K)
    idx = np.asarray(idx, dtype=np.int64).reshape(M, K)
    own = np.arange(M)
    # With more than K patterns at identical positions the query may omit the seed itself.
    lacks_self = ~(idx == own[:, None]).any(axis=1)
    if lacks_self.any():
        idx[lacks_self, -1] = own[lacks_self]
    return idx


def _random_groups(neighbours: np.ndarray, seeds: np.ndarray, C: int,
                   rng: np.random.Generator) -> np.ndarray:
    """For each seed pick C distinct members of its neighbourhood; rows sorted ascending."""
    K = neighbours.shape[1]
    # argsort of uniform noise = one random permutation of the K neighbours per row.
    perm = np.argsort(rng.random((len(seeds), K)), axis=1)[:, :C]
    return np.sort(np.take_along_axis(neighbours[seeds], perm, axis=1), axis=1)


def _distinct_groups(neighbours: np.ndarray, C: int, n_groups: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``n_groups`` distinct member sets drawn from all C-subsets of every neighbourhood."""
    from itertools import combinations

    M, K = neighbours.shape
    candidates = M * math.comb(K, C)
    if n_groups > candidates:
        raise ValueError(
            f"n_groups={n_groups} is more than the {candidates} possible groups "
            f"(M={M} seeds x C({K},{C}) member choices); lower n_groups or raise K")
    if candidates <= _ENUMERATION_LIMIT:
        combos = np.array(list(combinations(range(K), C)), dtype=np.int64)   # (comb, C)
        pool = np.sort(neighbours[:, combos].reshape(-1, C), axis=1)
        pool = np.unique(pool, axis=0)
        if n_groups > len(pool):
            raise ValueError(
                f"n_groups={n_groups} exceeds the {len(pool)} distinct groups of C={C} patterns "
                f"that exist among the K={K} nearest neighbours of the M={M} patterns; lower "
                "n_groups or raise K")
        pick = np.sort(rng.choice(len(pool), size=n_groups, replace=False))
        return pool[pick]
    # Too many candidates to enumerate: draw (seed, subset) pairs and keep new member sets.
    found: dict[tuple[int, ...], None] = {}
    for _ in range(_MAX_REJECTION_ROUNDS):
        need = n_groups - len(found)
        seeds = rng.integers(0, M, size=max(2 * need, 64))
        for row in _random_groups(neighbours, seeds, C, rng):
            found.setdefault(tuple(int(v) for v in row))
            if len(found) == n_groups:
                return np.array(sorted(found), dtype=np.int64)
    raise ValueError(
        f"could not draw n_groups={n_groups} distinct groups of C={C} patterns from the K={K} "
        f"nearest neighbours of M={M} patterns (found {len(found)}); lower n_groups or raise K")


def group_patterns(xcoords: Any, ycoords: Any, gridsize: int, n_groups: int | None = None,
                   K: int | None = DEFAULT_K, seed: int = 0) -> GroupedData:
    """Group scan positions into sets of C = gridsize**2 neighbouring patterns.

    Args:
        xcoords, ycoords: (M,) scan positions (column, row) in object pixels.
        gridsize: g >= 1; groups hold C = g**2 patterns.
        n_groups: number of groups G. ``None`` = M groups (for g = 1 every pattern, in order; for
            g > 1 one group seeded at every pattern, in order). For g = 1, ``n_groups < M``
            selects a random subset of patterns (sorted) and ``n_groups > M`` is an error. For
            g > 1, ``n_groups <= M`` seeds one group at each of ``n_groups`` randomly chosen
            patterns (sorted); ``n_groups > M`` draws that many *distinct* member sets from all
            C-subsets of every K-neighbourhood (an error if fewer exist).
        K: neighbourhood size for g > 1 (seed included); C <= K <= M. ``None`` means 6.
            Ignored for g = 1.
        seed: seed of the ``numpy.random.Generator`` that picks seeds and members; the result
            is a deterministic function of the inputs.

    Returns:
        :class:`GroupedData` with members ascending within each group.

    Raises:
        ValueError: invalid arguments, with the reason.
    """
    positions = _positions(xcoords, ycoords)
    M = len(positions)
    gridsize = _as_int("gridsize", gridsize, 1)
    if n_groups is not None:
        n_groups = _as_int("n_groups", n_groups, 1)
    seed = _as_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    C = gridsize * gridsize

    if gridsize == 1:
        if n_groups is None or n_groups == M:
            idx = np.arange(M)
        elif n_groups < M:
            idx = np.sort(rng.choice(M, size=n_groups, replace=False))
        else:
            raise ValueError(
                f"n_groups={n_groups} is larger than the number of patterns M={M}: with "
                "gridsize 1 every group is a single pattern, so there are only M distinct "
                "groups; use n_groups <= M (or None for all)")
        return _finish(positions, idx[:, None], gridsize)

    K = DEFAULT_K if K is None else _as_int("K", K, 1)
    if M < C:
        raise ValueError(f"gridsize {gridsize} needs groups of C={C} patterns but the scan has "
                         f"only M={M} patterns")
    if K < C:
        raise ValueError(f"K={K} nearest neighbours cannot supply C=gridsize**2={C} distinct "
                         f"patterns per group; use K >= {C}")
    if K > M:
        raise ValueError(f"K={K} nearest neighbours requested but the scan has only M={M} "
                         f"patterns; use K <= {M}")
    neighbours = _neighbours(positions, K)
    if n_groups is None or n_groups == M:
        nn = _random_groups(neighbours, np.arange(M), C, rng)
    elif n_groups < M:
        seeds = np.sort(rng.choice(M, size=n_groups, replace=False))
        nn = _random_groups(neighbours, seeds, C, rng)
    else:
        nn = _distinct_groups(neighbours, C, n_groups, rng)
    return _finish(positions, nn, gridsize)


def group_scan(scan: Any, gridsize: int, n_groups: int | None = None,
               K: int | None = DEFAULT_K, seed: int = 0) -> GroupedData:
    """:func:`group_patterns` on the positions of a loaded scan (anything with ``xcoords``,
    ``ycoords`` and ``source``); a grouping error names the scan's file."""
    try:
        return group_patterns(scan.xcoords, scan.ycoords, gridsize, n_groups=n_groups, K=K,
                              seed=seed)
    except ValueError as exc:
        raise ValueError(f"{scan.source}: {exc}") from None
