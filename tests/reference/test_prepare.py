"""Grouped model inputs: normalisation, offsets, absolute positions, ground truth, batching."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.data.contract import DataContractError, validate_arrays
from ptycho.data.prepare import GroupedArrays, iter_grouped_batches, prepare_grouped_arrays
from ptycho.grouping import group_patterns

N, H = 8, 40


def make_scan(with_object=True, fractional=False, side=4, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] * 6 + 10
    x, y = xx.ravel().astype(float), yy.ravel().astype(float)
    if fractional:
        x = x + rng.uniform(-0.5, 0.5, x.size)
        y = y + rng.uniform(-0.5, 0.5, y.size)
    M = x.size
    arrays = {
        "diff3d": (rng.random((M, N, N)) + 0.1).astype(np.float32),
        "xcoords": x,
        "ycoords": y,
        "probeGuess": np.ones((N, N), np.complex64),
    }
    if with_object:
        arrays["objectGuess"] = (rng.random((H, H)) * np.exp(1j * rng.random((H, H)))
                                 ).astype(np.complex64)
    return validate_arrays(arrays)


def slice_patch(obj, y, x):
    """Integer-centre patch by plain slicing: rows y - N/2 ... y + N/2 - 1."""
    y, x = int(round(y)), int(round(x))
    return obj[y - N // 2: y + N // 2, x - N // 2: x + N // 2]


def test_gridsize1_arrays():
    data = make_scan()
    g = prepare_grouped_arrays(data, gridsize=1, normalization_factor=2.5,
                               with_ground_truth=True)
    assert isinstance(g, GroupedArrays)
    assert (g.n_groups, g.C, g.N, len(g), g.gridsize) == (16, 1, N, 16, 1)
    assert g.X.dtype == np.float32 and g.X.shape == (16, 1, N, N)
    np.testing.assert_allclose(g.X[:, 0], data.diffraction / 2.5, rtol=1e-6)
    assert g.offsets.dtype == np.float32 and g.offsets.shape == (16, 1, 2)
    np.testing.assert_array_equal(g.offsets, 0.0)
    assert g.positions.dtype == np.float64
    np.testing.assert_array_equal(g.positions[:, 0], data.positions)
    np.testing.assert_array_equal(g.nn_indices[:, 0], np.arange(16))
    assert g.gt_patches.dtype == np.complex64 and g.gt_patches.shape == (16, 1, N, N)
    for m in range(16):
        np.testing.assert_array_equal(g.gt_patches[m, 0],
                                      slice_patch(data.object, data.ycoords[m], data.xcoords[m]))
    assert g.normalization_factor == 2.5
    # loss targets recover the photon counts of the file
    np.testing.assert_allclose((g.X[:, 0] * g.normalization_factor) ** 2,
                               data.diffraction.astype(np.float64) ** 2, rtol=1e-5)


def test_gridsize2_members_offsets_and_ground_truth():
    data = make_scan()
    g = prepare_grouped_arrays(data, gridsize=2, normalization_factor=0.5, K=6, seed=3,
                               with_ground_truth=True)
    ref = group_patterns(data.xcoords, data.ycoords, 2, K=6, seed=3)
    np.testing.assert_array_equal(g.nn_indices, ref.nn_indices)
    assert g.X.shape == (16, 4, N, N) and g.offsets.shape == (16, 4, 2)
    for b in range(g.n_groups):
        for c in range(4):
            m = g.nn_indices[b, c]
            np.testing.assert_allclose(g.X[b, c], data.diffraction[m] / 0.5, rtol=1e-6)
            np.testing.assert_array_equal(g.positions[b, c], [data.ycoords[m], data.xcoords[m]])
            np.testing.assert_array_equal(
                g.gt_patches[b, c], slice_patch(data.object, data.ycoords[m], data.xcoords[m]))
    np.testing.assert_allclose(g.offsets, ref.coords_relative.astype(np.float32))
    # centre + relative offset = absolute member position (one sign convention)
    np.testing.assert_allclose(g.coords_offsets[:, None, :] + g.offsets, g.positions, atol=1e-5)


def test_fractional_positions_use_physics_extraction():
    from ptycho.physics import extract_patches

    data = make_scan(fractional=True)
    for interpolation in ("bilinear", "fourier"):
        g = prepare_grouped_arrays(data, 2, 1.0, n_groups=24, K=5, seed=1,
                                   with_ground_truth=True, interpolation=interpolation)
        expected = extract_patches(data.object, g.positions.reshape(-1, 2), N,
                                   interpolation=interpolation).reshape(g.gt_patches.shape)
        np.testing.assert_allclose(g.gt_patches, expected, atol=1e-6)


def test_seed_and_n_groups_pass_through():
    data = make_scan()
    a = prepare_grouped_arrays(data, 2, 1.0, n_groups=30, K=6, seed=9)
    b = prepare_grouped_arrays(data, 2, 1.0, n_groups=30, K=6, seed=9)
    c = prepare_grouped_arrays(data, 2, 1.0, n_groups=30, K=6, seed=10)
    assert a.n_groups == 30 and a.gt_patches is None
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.nn_indices, b.nn_indices)
    assert not np.array_equal(a.nn_indices, c.nn_indices)
    with pytest.raises(ValueError):
        a.X[0, 0, 0, 0] = 1.0                      # read-only


def test_ground_truth_without_object_is_a_contract_error():
    data = make_scan(with_object=False)
    assert prepare_grouped_arrays(data, 1, 1.0).gt_patches is None
    with pytest.raises(DataContractError, match=r"<memory>: key 'objectGuess': ground-truth "
                                                r"patches were requested"):
        prepare_grouped_arrays(data, 1, 1.0, with_ground_truth=True)


def test_grouping_error_names_the_scan():
    data = make_scan(with_object=False, side=1)
    with pytest.raises(ValueError, match=r"^<memory>: gridsize 2 needs groups of C=4 patterns "
                                         r"but the scan has only M=1"):
        prepare_grouped_arrays(data, 2, 1.0)


@pytest.mark.parametrize("factor", [0, -1.0, float("nan"), float("inf"), "abc", None, True])
def test_bad_normalization_factor(factor):
    with pytest.raises(ValueError, match="normalization_factor must be a positive finite"):
        prepare_grouped_arrays(make_scan(with_object=False), 1, factor)


def test_bad_data_type():
    with pytest.raises(TypeError, match="PtychoData"):
        prepare_grouped_arrays({"diff3d": np.ones((1, N, N))}, 1, 1.0)


@pytest.mark.parametrize("G, batch_size", [(10, 5), (10, 3), (10, 1), (10, 10), (10, 16),
                                           (1, 4), (17, 8)])
def test_batches_cover_every_group(G, batch_size):
    slices = list(iter_grouped_batches(range(G), batch_size))
    covered = np.concatenate([np.arange(G)[s] for s in slices])
    np.testing.assert_array_equal(covered, np.arange(G))
    sizes = [s.stop - s.start for s in slices]
    assert all(size == batch_size for size in sizes[:-1])
    assert sizes[-1] == (G % batch_size or min(batch_size, G))


def test_batches_over_grouped_arrays():
    g = prepare_grouped_arrays(make_scan(with_object=False), 1, 1.0, n_groups=11)
    batches = [g.X[s] for s in iter_grouped_batches(g, 4)]
    assert [len(b) for b in batches] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(batches), g.X)


@pytest.mark.parametrize("batch_size", [0, -2, 2.5, True, "4"])
def test_bad_batch_size_fails_immediately(batch_size):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        iter_grouped_batches(range(5), batch_size)
