"""NumPy reference of the per-group error-reduction projection (``ptycho.projection``)."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.physics import diffraction_amplitude, extract_patches, group_reassemble
from ptycho.probe import default_probe
from ptycho.projection import group_projection, inverse_far_field
from ptycho.physics import far_field

N = 32


def _scene(seed, B=2, C=4, integer=True):
    """A smooth object, a probe with phase, and B groups of C patches cut from it."""
    rng = np.random.default_rng(seed)
    H = W = 96
    yy, xx = np.mgrid[:H, :W]
    obj = ((0.75 + 0.2 * np.sin(xx / 5.0) * np.cos(yy / 7.0))
           * np.exp(1j * 0.8 * np.sin((xx + 2 * yy) / 9.0)))
    probe = default_probe(N) * np.exp(0.5j * ((np.arange(N) - N / 2) ** 2 / N)[None, :])
    centres = rng.uniform(40, 56, size=(B, 2))
    rel = rng.integers(-4, 5, size=(B, C, 2)).astype(float) if integer else \
        rng.uniform(-4, 4, size=(B, C, 2))
    if C == 1:
        rel[:] = 0.0
    if not integer:
        rel -= rel.mean(axis=1, keepdims=True)
    pos = centres[:, None, :] + rel
    patches = extract_patches(obj, pos.reshape(-1, 2), N).reshape(B, C, N, N)
    target = diffraction_amplitude(patches, probe)
    return patches, rel, probe, target, rng


def _misfit(patches, probe, target):
    return float(np.sum((diffraction_amplitude(patches, probe) - target) ** 2))


def test_inverse_far_field_inverts_far_field():
    x = np.random.default_rng(0).normal(size=(3, 8, 8)) + 1j
    assert np.allclose(inverse_far_field(far_field(x)), x, atol=1e-12)


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
@pytest.mark.parametrize("central", [False, True])
def test_zero_steps_is_the_overlap_constraint(interp, central):
    patches, rel, probe, target, rng = _scene(1, integer=False)
    start = patches * np.exp(0.3j * rng.normal(size=patches.shape))
    fp = None
    if central:
        fp = np.zeros((N, N))
        fp[N // 4:3 * N // 4, N // 4:3 * N // 4] = 1.0
    out = group_projection(start, rel, probe, target, 0, interpolation=interp, footprint=fp)
    np.testing.assert_array_equal(out, group_reassemble(start, rel, interpolation=interp,
                                                         footprint=fp))


def test_consistent_patches_are_a_fixed_point():
    """Patches of one object with their own amplitudes: the projections change nothing where
    the probe is bright."""
    patches, rel, probe, target, _ = _scene(2)
    out = group_projection(patches, rel, probe, target, 4)
    bright = np.abs(probe) ** 2 >= 0.05 * np.max(np.abs(probe) ** 2)
    assert np.max(np.abs(out - patches)[..., bright]) < 1e-9


@pytest.mark.parametrize("interp", ["bilinear", "fourier"])
def test_projections_bring_a_perturbed_group_towards_its_data(interp):
    patches, rel, probe, target, rng = _scene(3, B=3)
    start = patches * np.exp(0.5j * rng.normal(size=patches.shape)) \
        * (1 + 0.2 * rng.normal(size=patches.shape))
    misfits = [_misfit(group_projection(start, rel, probe, target, k, interpolation=interp),
                       probe, target) for k in (0, 1, 3, 10)]
    assert misfits[0] > misfits[1] > misfits[2] > misfits[3]
    assert misfits[3] < 0.2 * misfits[0]


def test_groups_never_mix():
    patches, rel, probe, target, rng = _scene(4, B=3)
    start = patches * np.exp(0.4j * rng.normal(size=patches.shape))
    together = group_projection(start, rel, probe, target, 3)
    for b in range(3):
        alone = group_projection(start[b:b + 1], rel[b:b + 1], probe, target[b:b + 1], 3)
        np.testing.assert_allclose(together[b:b + 1], alone, atol=1e-12)


def test_gridsize_one_is_single_pattern_error_reduction():
    patches, rel, probe, target, rng = _scene(5, B=2, C=1)
    start = patches * np.exp(0.3j * rng.normal(size=patches.shape))
    out = group_projection(start, rel, probe, target, 1)
    # one step by hand: the exit wave with the measured modulus, divided by the probe where lit
    psi = probe * start
    F = far_field(psi)
    fixed = inverse_far_field(target * F / np.abs(F))
    weight = np.abs(probe) ** 2
    lit = weight >= 0.05 * weight.max()
    expected = np.where(lit, np.conj(probe) * fixed / np.where(lit, weight, 1.0), start)
    np.testing.assert_allclose(out, expected, atol=1e-10)


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=-1), "steps must be an integer >= 0"),
    (dict(steps=1.5), "steps must be an integer >= 0"),
    (dict(lit_fraction=0.0), "lit_fraction"),
    (dict(target_amplitude=np.ones((2, 4, N, N - 1))), "target_amplitude must have"),
    (dict(offsets=np.zeros((2, 3, 2))), "offsets must have shape"),
    (dict(probe=np.ones((N - 2, N - 2))), "probe must have shape"),
])
def test_bad_arguments_are_named(kwargs, match):
    patches, rel, probe, target, _ = _scene(6)
    args = dict(patches=patches, offsets=rel, probe=probe, target_amplitude=target, steps=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        group_projection(**args)
