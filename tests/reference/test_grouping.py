"""Grouping of scan positions: shapes, sign conventions, neighbourhoods, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ptycho.grouping as grouping
from ptycho.grouping import GroupedData, group_patterns


def jittered_raster(side: int = 6, step: float = 5.0, seed: int = 3):
    """A side x side raster scan with small jitter (no distance ties)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(float) * step
    x = xx.ravel() + rng.uniform(-0.4, 0.4, side * side) + 20.0
    y = yy.ravel() + rng.uniform(-0.4, 0.4, side * side) + 20.0
    return x, y


def knn_sets(x, y, K):
    pos = np.stack([y, x], axis=1)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    return [set(np.argsort(row, kind="stable")[:K].tolist()) for row in dist]


def check_geometry(g: GroupedData, x, y):
    pos = np.stack([y, x], axis=1)
    assert g.nn_indices.dtype == np.int64
    G, C = g.nn_indices.shape
    assert g.coords_offsets.shape == (G, 2) and g.coords_relative.shape == (G, C, 2)
    members = pos[g.nn_indices]
    np.testing.assert_allclose(g.coords_offsets, members.mean(axis=1))
    np.testing.assert_allclose(g.coords_relative, members - g.coords_offsets[:, None, :])
    np.testing.assert_allclose(g.coords_relative.sum(axis=1), 0.0, atol=1e-9)


# ------------------------------------------------------------------------------------------
# gridsize 1
# ------------------------------------------------------------------------------------------

def test_gridsize1_every_pattern_in_order():
    x, y = jittered_raster(4)
    g = group_patterns(x, y, gridsize=1)
    assert (g.n_groups, g.C, g.gridsize, len(g)) == (16, 1, 1, 16)
    np.testing.assert_array_equal(g.nn_indices[:, 0], np.arange(16))
    np.testing.assert_array_equal(g.coords_offsets, np.stack([y, x], axis=1))
    np.testing.assert_array_equal(g.coords_relative, 0.0)
    assert group_patterns(x, y, 1, n_groups=16).nn_indices.tolist() == g.nn_indices.tolist()


def test_gridsize1_subset_sorted_seeded():
    x, y = jittered_raster(5)
    a = group_patterns(x, y, 1, n_groups=7, seed=11)
    b = group_patterns(x, y, 1, n_groups=7, seed=11)
    c = group_patterns(x, y, 1, n_groups=7, seed=12)
    idx = a.nn_indices[:, 0]
    assert len(np.unique(idx)) == 7 and np.all(np.diff(idx) > 0) and idx.max() < 25
    np.testing.assert_array_equal(a.nn_indices, b.nn_indices)
    assert not np.array_equal(a.nn_indices, c.nn_indices)
    check_geometry(a, x, y)


def test_gridsize1_more_groups_than_patterns_is_an_error():
    x, y = jittered_raster(3)
    with pytest.raises(ValueError, match=r"n_groups=10 is larger than the number of patterns "
                                         r"M=9: with gridsize 1 every group is a single"):
        group_patterns(x, y, 1, n_groups=10)


# ------------------------------------------------------------------------------------------
# gridsize > 1
# ------------------------------------------------------------------------------------------

def test_relative_offsets_sign_and_axis_order():
    # rectangle: x in {0, 4}, y in {0, 2}; centre (y, x) = (1, 2)
    x = np.array([0.0, 4.0, 0.0, 4.0])
    y = np.array([0.0, 0.0, 2.0, 2.0])
    g = group_patterns(x, y, gridsize=2, K=4, n_groups=1)
    np.testing.assert_array_equal(g.nn_indices, [[0, 1, 2, 3]])
    np.testing.assert_allclose(g.coords_offsets, [[1.0, 2.0]])
    np.testing.assert_allclose(g.coords_relative[0],
                               [[-1.0, -2.0], [-1.0, 2.0], [1.0, -2.0], [1.0, 2.0]])


@pytest.mark.parametrize("gridsize, K", [(2, 4), (2, 6), (3, 12)])
def test_groups_come_from_one_neighbourhood(gridsize, K):
    x, y = jittered_raster(6)
    g = group_patterns(x, y, gridsize=gridsize, K=K, seed=5)
    C = gridsize**2
    assert g.nn_indices.shape == (36, C) and g.gridsize == gridsize
    neighbourhoods = knn_sets(x, y, K)
    for row in g.nn_indices:
        assert len(set(row.tolist())) == C and np.all(np.diff(row) > 0)
        assert any(set(row.tolist()) <= hood for hood in neighbourhoods)
    check_geometry(g, x, y)


def test_default_n_groups_seeds_every_pattern_in_order():
    x, y = jittered_raster(5)
    g = group_patterns(x, y, gridsize=2, K=4)
    hoods = knn_sets(x, y, 4)
    # with K == C the group of seed j is exactly its neighbourhood, seed included
    for j, row in enumerate(g.nn_indices):
        assert set(row.tolist()) == hoods[j] and j in row


def test_deterministic_for_a_seed_and_different_across_seeds():
    x, y = jittered_raster(6)
    a = group_patterns(x, y, 2, n_groups=20, K=7, seed=42)
    b = group_patterns(x, y, 2, n_groups=20, K=7, seed=42)
    c = group_patterns(x, y, 2, n_groups=20, K=7, seed=43)
    for name in ("nn_indices", "coords_offsets", "coords_relative"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.nn_indices, c.nn_indices)
    with pytest.raises(ValueError):
        a.nn_indices[0, 0] = 0                 # read-only


def test_more_groups_than_patterns_are_distinct():
    x, y = jittered_raster(4)                  # M = 16
    g = group_patterns(x, y, 2, n_groups=40, K=6, seed=1)
    assert g.nn_indices.shape == (40, 4)
    assert len({tuple(r) for r in g.nn_indices.tolist()}) == 40
    hoods = knn_sets(x, y, 6)
    for row in g.nn_indices:
        assert any(set(row.tolist()) <= hood for hood in hoods)
    check_geometry(g, x, y)
    again = group_patterns(x, y, 2, n_groups=40, K=6, seed=1)
    np.testing.assert_array_equal(g.nn_indices, again.nn_indices)


def test_rejection_sampling_path(monkeypatch):
    monkeypatch.setattr(grouping, "_ENUMERATION_LIMIT", 0)
    x, y = jittered_raster(4)
    g = group_patterns(x, y, 2, n_groups=30, K=6, seed=2)
    assert len({tuple(r) for r in g.nn_indices.tolist()}) == 30
    hoods = knn_sets(x, y, 6)
    assert all(any(set(r.tolist()) <= h for h in hoods) for r in g.nn_indices)
    np.testing.assert_array_equal(g.nn_indices,
                                  group_patterns(x, y, 2, n_groups=30, K=6, seed=2).nn_indices)


def test_rejection_sampling_gives_up_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(grouping, "_ENUMERATION_LIMIT", 0)
    monkeypatch.setattr(grouping, "_MAX_REJECTION_ROUNDS", 3)
    x, y = jittered_raster(3)
    x, y = x[:5], y[:5]                        # only C(5, 4) = 5 distinct groups exist
    with pytest.raises(ValueError, match=r"could not draw n_groups=6 distinct groups .* "
                                         r"\(found 5\)"):
        group_patterns(x, y, 2, n_groups=6, K=5)


def test_not_enough_distinct_combinations():
    x, y = jittered_raster(3)
    x, y = x[:5], y[:5]
    with pytest.raises(ValueError, match=r"n_groups=6 exceeds the 5 distinct groups of C=4"):
        group_patterns(x, y, 2, n_groups=6, K=5)
    g = group_patterns(x, y, 2, n_groups=5, K=5)
    assert g.n_groups == 5
    with pytest.raises(ValueError, match=r"more than the \d+ possible groups"):
        group_patterns(x, y, 2, n_groups=5 * math.comb(5, 4) + 1, K=5)


def test_identical_positions_keep_the_seed_in_its_neighbourhood():
    x = np.full(10, 7.0)
    y = np.full(10, 9.0)
    g = group_patterns(x, y, gridsize=2, K=4)
    for j, row in enumerate(g.nn_indices):
        assert j in row and len(set(row.tolist())) == 4
    np.testing.assert_allclose(g.coords_relative, 0.0)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(gridsize=2, K=3), r"K=3 nearest neighbours cannot supply C=gridsize\*\*2=4"),
    (dict(gridsize=2, K=10), r"K=10 nearest neighbours requested but the scan has only M=9"),
    (dict(gridsize=4, K=16), r"gridsize 4 needs groups of C=16 patterns but the scan has only "
                             r"M=9"),
    (dict(gridsize=0), r"gridsize must be an integer >= 1, got 0"),
    (dict(gridsize=True), r"gridsize must be an integer"),
    (dict(gridsize=2.0), r"gridsize must be an integer"),
    (dict(gridsize=1, n_groups=0), r"n_groups must be an integer >= 1, got 0"),
    (dict(gridsize=1, seed=-1), r"seed must be an integer >= 0"),
])
def test_invalid_arguments(kwargs, fragment):
    x, y = jittered_raster(3)
    with pytest.raises(ValueError, match=fragment):
        group_patterns(x, y, **kwargs)


def test_invalid_positions():
    with pytest.raises(ValueError, match=r"equal length, got shapes \(3,\) and \(2,\)"):
        group_patterns(np.zeros(3), np.zeros(2), 1)
    with pytest.raises(ValueError, match="empty"):
        group_patterns(np.zeros(0), np.zeros(0), 1)
    with pytest.raises(ValueError, match="finite"):
        group_patterns(np.array([0.0, np.nan]), np.zeros(2), 1)


def test_k_none_means_default():
    x, y = jittered_raster(4)
    a = group_patterns(x, y, 2, K=None, seed=3)
    b = group_patterns(x, y, 2, K=grouping.DEFAULT_K, seed=3)
    np.testing.assert_array_equal(a.nn_indices, b.nn_indices)
