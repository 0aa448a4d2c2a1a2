"""ptycho_torch.helper against the NumPy reference ptycho.physics (values and gradients)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ptycho import physics as ref  # noqa: E402
from ptycho_torch import helper  # noqa: E402

RTOL = 1e-5


def _close(actual, expected, rtol=RTOL):
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else actual
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected)))
    assert scale > 0
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol} * {scale:.3g}"


def _images(rng, B, H, W, complex_):
    a = rng.standard_normal((B, H, W)).astype(np.float32)
    if complex_:
        a = (a + 1j * rng.standard_normal((B, H, W))).astype(np.complex64)
    return a


@pytest.mark.parametrize("interpolation", ["bilinear", "fourier"])
@pytest.mark.parametrize("complex_", [False, True])
def test_translate_matches_reference(interpolation, complex_):
    rng = np.random.default_rng(0)
    imgs = _images(rng, 5, 12, 10, complex_)
    offs = np.array([[0.3, -1.7], [2.0, 0.0], [-0.5, 0.25], [0.0, 0.0], [3.9, -4.2]],
                    dtype=np.float32)
    out = helper.translate(torch.from_numpy(imgs), torch.from_numpy(offs), interpolation)
    expected = ref.translate(imgs, offs, interpolation)
    assert out.dtype == (torch.complex64 if complex_ else torch.float32)
    assert tuple(out.shape) == imgs.shape
    _close(out, expected)


def test_translate_moves_content_down_and_right():
    img = torch.zeros(1, 8, 8)
    img[0, 2, 3] = 1.0
    out = helper.translate(img, torch.tensor([[1.0, 2.0]]))
    assert out[0, 3, 5] == 1.0 and out.sum() == 1.0


@pytest.mark.parametrize("n_offsets", [1, 3])
def test_translate_rejects_offset_count_mismatch(n_offsets):
    with pytest.raises(ValueError, match="offsets"):
        helper.translate(torch.zeros(2, 4, 4), torch.zeros(n_offsets, 2))


def test_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="interpolation"):
        helper.translate(torch.zeros(1, 4, 4), torch.zeros(1, 2), "cubic")


@pytest.mark.parametrize("interpolation", ["bilinear", "fourier"])
def test_extract_patches_matches_reference(interpolation):
    rng = np.random.default_rng(1)
    obj = (rng.standard_normal((40, 36)) + 1j * rng.standard_normal((40, 36))).astype(np.complex64)
    pos = np.array([[20.0, 18.0], [10.4, 9.7], [3.2, 30.5], [37.9, 2.1]])
    out = helper.extract_patches(torch.from_numpy(obj), torch.from_numpy(pos), 16, interpolation)
    _close(out, ref.extract_patches(obj, pos, 16, interpolation))


def _group_case(seed, B, gridsize, N=16):
    rng = np.random.default_rng(seed)
    C = gridsize * gridsize
    patches = (rng.uniform(0.2, 1.0, (B, C, N, N))
               * np.exp(1j * rng.uniform(-1, 1, (B, C, N, N)))).astype(np.complex64)
    offsets = rng.uniform(-5, 5, (B, C, 2)).astype(np.float32)
    return patches, offsets


@pytest.mark.parametrize("gridsize", [1, 2, 3])
@pytest.mark.parametrize("B", [1, 7])
@pytest.mark.parametrize("interpolation", ["bilinear", "fourier"])
def test_group_reassemble_matches_reference(gridsize, B, interpolation):
    patches, offsets = _group_case(gridsize * 10 + B, B, gridsize)
    fp = np.zeros((16, 16), dtype=np.float32)
    fp[4:12, 4:12] = 1
    for footprint in (None, fp):
        out = helper.group_reassemble(
            torch.from_numpy(patches), torch.from_numpy(offsets), interpolation=interpolation,
            footprint=None if footprint is None else torch.from_numpy(footprint))
        _close(out, ref.group_reassemble(patches, offsets, interpolation=interpolation,
                                         footprint=footprint))


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_group_reassemble_never_mixes_groups(gridsize):
    """A full batch equals its pieces, including a partial last batch of 3."""
    patches, offsets = _group_case(5, 11, gridsize)
    p, o = torch.from_numpy(patches), torch.from_numpy(offsets)
    full = helper.group_reassemble(p, o)
    pieces = torch.cat([helper.group_reassemble(p[s:s + 4], o[s:s + 4]) for s in (0, 4, 8)])
    assert torch.equal(full, pieces)


def test_group_reassemble_single_patch_integer_offset_is_identity():
    patches, _ = _group_case(2, 3, 1)
    offsets = np.array([[[2.0, -3.0]], [[0.0, 0.0]], [[-1.0, 4.0]]], dtype=np.float32)
    out = helper.group_reassemble(torch.from_numpy(patches), torch.from_numpy(offsets))
    np.testing.assert_allclose(out.numpy(), patches, rtol=0, atol=1e-6)


@pytest.mark.parametrize("interpolation", ["bilinear", "fourier"])
def test_group_reassemble_empty_batch_is_empty(interpolation):
    patches = torch.zeros((0, 4, 16, 16), dtype=torch.complex64)
    out = helper.group_reassemble(patches, torch.zeros((0, 4, 2)), interpolation=interpolation)
    assert out.shape == (0, 4, 16, 16) and out.dtype == torch.complex64


def test_group_reassemble_rejects_mismatched_offsets():
    patches, offsets = _group_case(3, 4, 2)
    with pytest.raises(ValueError, match="offsets"):
        helper.group_reassemble(torch.from_numpy(patches), torch.from_numpy(offsets[:, :2]))
    with pytest.raises(ValueError, match="offsets"):
        helper.group_reassemble(torch.from_numpy(patches), torch.from_numpy(offsets[:3]))


def test_far_field_illuminate_and_amplitude_match_reference():
    rng = np.random.default_rng(4)
    obj = _images(rng, 3, 16, 16, True)
    probe = _images(rng, 1, 16, 16, True)[0]
    psi = helper.illuminate(torch.from_numpy(obj), torch.from_numpy(probe))
    _close(psi, ref.illuminate(obj, probe))
    _close(helper.far_field(psi), ref.far_field(ref.illuminate(obj, probe)))
    amp = helper.diffraction_amplitude(torch.from_numpy(obj), torch.from_numpy(probe))
    assert amp.dtype == torch.float32
    _close(amp, ref.diffraction_amplitude(obj, probe))


def test_poisson_nll_and_full_match_reference():
    rng = np.random.default_rng(5)
    lam = rng.uniform(0, 50, (4, 8, 8)).astype(np.float32)
    lam[0, 0, 0] = 0.0  # exercises the floor
    K = rng.poisson(20, (4, 8, 8)).astype(np.float32)
    _close(helper.poisson_nll(torch.from_numpy(lam), torch.from_numpy(K)), ref.poisson_nll(lam, K))
    _close(helper.poisson_nll_full(torch.from_numpy(lam), torch.from_numpy(K)),
           ref.poisson_nll_full(lam, K))


def test_intensity_scale_matches_reference():
    assert helper.intensity_scale(1e9, 64) == pytest.approx(ref.intensity_scale(1e9, 64), rel=1e-12)
    with pytest.raises(ValueError, match="mean_photons"):
        helper.intensity_scale(0.0, 64)


# ------------------------------------------------------------------------ gradients (float64)
def _d(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("interpolation", ["bilinear", "fourier"])
def test_translate_gradcheck(interpolation):
    rng = np.random.default_rng(6)
    img = _d(rng.standard_normal((2, 6, 5)))
    off = _d([[0.3, -0.6], [1.2, 0.45]])
    assert torch.autograd.gradcheck(lambda i, o: helper.translate(i, o, interpolation), (img, off))


@pytest.mark.parametrize("interpolation", ["bilinear", "fourier"])
def test_extract_patches_gradcheck(interpolation):
    rng = np.random.default_rng(7)
    obj = _d(rng.standard_normal((12, 12)))
    pos = _d([[6.3, 5.6], [4.2, 7.7]])
    assert torch.autograd.gradcheck(
        lambda o, p: helper.extract_patches(o, p, 4, interpolation), (obj, pos))


@pytest.mark.parametrize("gridsize", [1, 2])
@pytest.mark.parametrize("interpolation", ["bilinear", "fourier"])
def test_group_reassemble_gradcheck(gridsize, interpolation):
    rng = np.random.default_rng(8)
    C = gridsize * gridsize
    patches = _d(rng.standard_normal((2, C, 4, 4)))
    offsets = _d(rng.uniform(-1.4, 1.4, (2, C, 2)).round(2) + 0.013)
    assert torch.autograd.gradcheck(
        lambda p, o: helper.group_reassemble(p, o, pad=2, interpolation=interpolation),
        (patches, offsets))


def test_physics_chain_gradcheck():
    rng = np.random.default_rng(9)
    obj = torch.tensor(rng.standard_normal((2, 4, 4)) + 1j * rng.standard_normal((2, 4, 4)),
                       dtype=torch.complex128, requires_grad=True)
    probe = torch.tensor(rng.standard_normal((4, 4)) + 1j, dtype=torch.complex128)
    K = torch.tensor(rng.poisson(3.0, (2, 4, 4)), dtype=torch.float64)

    def chain(o):
        lam = (2.0 * helper.diffraction_amplitude(o, probe)) ** 2
        return helper.poisson_nll(lam, K).sum()

    assert torch.autograd.gradcheck(chain, (obj,))


@pytest.mark.parametrize("threshold", [1e-3, 0.9])
def test_group_reassemble_threshold_matches_reference(threshold):
    patches, offsets = _group_case(12, 3, 2)
    p64, o64 = patches.astype(np.complex128), offsets.astype(np.float64)
    out = helper.group_reassemble(torch.from_numpy(p64), torch.from_numpy(o64),
                                  interpolation="fourier", threshold=threshold)
    _close(out, ref.group_reassemble(p64, o64, interpolation="fourier", threshold=threshold),
           rtol=1e-9)
