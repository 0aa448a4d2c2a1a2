"""ptycho.sampling and ptycho.initial_weights: the seeded split, epoch order and initial weights
both backends train from (NumPy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptycho.config import ModelConfig
from ptycho.convert import canonical_shapes, conv_layer_names
from ptycho.initial_weights import glorot_limit, initial_conv_weights, initial_weights
from ptycho.sampling import epoch_order, split_groups, validation_count


def test_split_is_seeded_disjoint_complete_and_rounds():
    tr, va = split_groups(20, 0.25, seed=3)
    assert len(va) == 5 and len(tr) == 15
    assert tr.dtype == np.int64 and np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(20))
    tr2, va2 = split_groups(20, 0.25, seed=3)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, split_groups(20, 0.25, seed=4)[1])
    # the held-out groups are the first of the seeded permutation
    assert np.array_equal(va, np.sort(np.random.default_rng(3).permutation(20)[:5]))
    assert validation_count(512, 0.125) == 64
    assert validation_count(10, 0.26) == 3           # round, not floor
    assert validation_count(2, 0.01) == 1            # at least one ...
    assert validation_count(2, 0.99) == 1            # ... and one training group left
    assert validation_count(1, 0.5) == 0
    assert len(split_groups(1, 0.5, 0)[1]) == 0 and len(split_groups(0, 0.5, 0)[0]) == 0


def test_epoch_order_is_a_stateless_seeded_permutation():
    a = epoch_order(37, seed=5, epoch=0)
    assert a.dtype == np.int64 and sorted(a.tolist()) == list(range(37))
    assert np.array_equal(a, epoch_order(37, 5, 0))
    assert np.array_equal(a, np.random.default_rng(np.random.SeedSequence(5).spawn(1)[0])
                          .permutation(37))
    # a stream of its own: not the seed's plain stream, which draws the split and the weights
    assert not np.array_equal(a, np.random.default_rng(5).permutation(37))
    orders = [epoch_order(37, 5, e) for e in range(4)] + [epoch_order(37, 6, 0)]
    assert len({o.tobytes() for o in orders}) == len(orders)
    assert epoch_order(0, 0, 0).size == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            epoch_order(4, bad, 0)
        with pytest.raises(ValueError):
            epoch_order(4, 0, bad)


@pytest.mark.parametrize("N, gridsize, probe_big, scale", [(32, 1, True, 0.25), (64, 2, False, 0.5)])
def test_initial_conv_weights_are_glorot_uniform_in_canonical_order(N, gridsize, probe_big, scale):
    cfg = ModelConfig(N=N, gridsize=gridsize, probe_big=probe_big, filter_scale=scale)
    w = initial_conv_weights(cfg, seed=7)
    shapes = canonical_shapes(cfg)
    conv = [k for k in shapes if k.endswith(("/kernel", "/bias"))]
    assert list(w) == conv
    assert [k[:-len("/kernel")] for k in conv if k.endswith("/kernel")] == \
        conv_layer_names(N, probe_big)
    rng = np.random.default_rng(7)
    for name, arr in w.items():
        assert arr.dtype == np.float32 and arr.shape == shapes[name]
        if name.endswith("/bias"):
            assert not arr.any()
            continue
        kh, kw, cin, cout = arr.shape
        limit = math.sqrt(6.0 / (kh * kw * (cin + cout)))
        assert glorot_limit(arr.shape) == pytest.approx(limit, rel=1e-15)
        expected = rng.uniform(-limit, limit, size=arr.shape).astype(np.float32)
        assert np.array_equal(arr, expected), name
        assert np.max(np.abs(arr)) <= limit
        if arr.size > 500:
            assert np.std(arr) == pytest.approx(limit / math.sqrt(3.0), rel=0.1)


def test_initial_weights_depend_on_the_seed_only_and_keep_the_base_extras():
    cfg = ModelConfig(N=32, filter_scale=0.25)
    a, b = initial_conv_weights(cfg, 0), initial_conv_weights(cfg, 1)
    assert all(np.array_equal(a[k], initial_conv_weights(cfg, 0)[k]) for k in a)
    assert not np.array_equal(a["enc0_conv0/kernel"], b["enc0_conv0/kernel"])
    base = {k: np.full(s, 0.5, np.float32) for k, s in canonical_shapes(cfg).items()}
    full = initial_weights(cfg, 0, base)
    assert list(full) == list(canonical_shapes(cfg))
    assert full["probe"] is base["probe"] and full["log_intensity_scale"] is base["log_intensity_scale"]
    assert np.array_equal(full["amp_out/kernel"], a["amp_out/kernel"])
    with pytest.raises(ValueError, match="probe"):
        initial_weights(cfg, 0, {k: v for k, v in base.items() if k != "probe"})
    with pytest.raises(ValueError, match="seed"):
        initial_conv_weights(cfg, -1)
