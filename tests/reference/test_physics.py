"""The NumPy reference physics against mathematics (not against itself)."""

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from ptycho import physics as ph

INTERPS = ("bilinear", "fourier")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _cplx(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _gaussian(shape, cy, cx, sigma):
    y = np.arange(shape[0])[:, None]
    x = np.arange(shape[1])[None, :]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


def _smooth_object(rng, H, W, sigma=3.0):
    """Complex, effectively band-limited object: Gaussian-smoothed noise, unit-ish scale."""
    re = scipy.ndimage.gaussian_filter(rng.standard_normal((H, W)), sigma, mode="wrap")
    im = scipy.ndimage.gaussian_filter(rng.standard_normal((H, W)), sigma, mode="wrap")
    o = re + 1j * im
    return o / np.abs(o).std()


def _shift_zero_fill(img, dy, dx):
    """Integer shift with zero fill: out[y, x] = img[y - dy, x - dx]."""
    out = np.zeros_like(img)
    rolled = np.roll(img, (dy, dx), axis=(0, 1))
    H, W = img.shape
    ys = slice(max(dy, 0), H + min(dy, 0))
    xs = slice(max(dx, 0), W + min(dx, 0))
    out[ys, xs] = rolled[ys, xs]
    return out


# ---------------------------------------------------------------------------- translate
@pytest.mark.parametrize("interp", INTERPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_translate_integer_shifts_match_zero_filled_roll(interp, dtype):
    rng = _rng(1)
    imgs = _cplx(rng, (5, 12, 10)) if np.dtype(dtype).kind == "c" else rng.standard_normal((5, 12, 10))
    imgs = imgs.astype(dtype)
    offs = np.array([[0, 0], [3, 0], [0, -4], [-5, 7], [11, -9]], dtype=float)
    out = ph.translate(imgs, offs, interp)
    assert out.dtype == dtype and out.shape == imgs.shape
    for b in range(5):
        want = _shift_zero_fill(imgs[b], int(offs[b, 0]), int(offs[b, 1]))
        if interp == "bilinear":
            np.testing.assert_array_equal(out[b], want)
        else:
            np.testing.assert_allclose(out[b], want, atol=1e-6)


def test_translate_bilinear_half_pixel_by_hand():
    img = np.arange(12, dtype=np.float64).reshape(3, 4)
    out = ph.translate(img[None], [[0.5, 0.0]])[0]
    # out[y] = 0.5*in[y-1] + 0.5*in[y], tap at row -1 is zero
    want = np.vstack([0.5 * img[0], 0.5 * (img[0] + img[1]), 0.5 * (img[1] + img[2])])
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-15)
    out = ph.translate(img[None], [[0.0, -0.5]])[0]
    # out[:, x] = 0.5*in[:, x] + 0.5*in[:, x+1], tap at col 4 is zero
    want = 0.5 * (img + np.hstack([img[:, 1:], np.zeros((3, 1))]))
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-15)
    # 2-D quarter-pixel: weights (0.75, 0.25) per axis on an interior pixel
    out = ph.translate(img[None], [[0.25, 0.25]])[0]
    want = 0.5625 * img[1, 2] + 0.1875 * img[0, 2] + 0.1875 * img[1, 1] + 0.0625 * img[0, 1]
    assert out[1, 2] == pytest.approx(want, abs=1e-14)


def test_translate_bilinear_general_definition():
    """Vectorised result equals the per-pixel formula with floor() taps and zero fill."""
    rng = _rng(2)
    imgs = _cplx(rng, (4, 7, 9))
    offs = np.array([[0.3, -1.7], [-2.25, 0.6], [5.5, 8.9], [-0.01, 0.99]])
    out = ph.translate(imgs, offs)
    H, W = 7, 9
    for b in range(4):
        for y in range(H):
            for x in range(W):
                sy, sx = y - offs[b, 0], x - offs[b, 1]
                y0, x0 = int(np.floor(sy)), int(np.floor(sx))
                wy, wx = sy - y0, sx - x0
                v = 0
                for ty, fy in ((y0, 1 - wy), (y0 + 1, wy)):
                    for tx, fx in ((x0, 1 - wx), (x0 + 1, wx)):
                        if 0 <= ty < H and 0 <= tx < W:
                            v += fy * fx * imgs[b, ty, tx]
                assert out[b, y, x] == pytest.approx(v, abs=1e-12)


def test_translate_fourier_matches_scipy_fourier_shift_on_band_limited_content():
    # Gaussians this narrow are band-limited and vanish at the border to double precision,
    # so the periodic (scipy) shift, the zero-padded shift and the exact translate agree.
    H, W = 32, 32
    blob = _gaussian((H, W), 15.3, 16.8, 2.0) + 0.5j * _gaussian((H, W), 16.4, 15.2, 2.2)
    offs = np.array([[0.37, -1.62], [2.5, 0.25], [-2.1, 1.75]])
    out = ph.translate(np.repeat(blob[None], 3, axis=0), offs, "fourier")
    for b in range(3):
        want = np.fft.ifft2(scipy.ndimage.fourier_shift(np.fft.fft2(blob), offs[b]))
        np.testing.assert_allclose(out[b], want, atol=1e-6)
        dy, dx = offs[b]
        analytic = (_gaussian((H, W), 15.3 + dy, 16.8 + dx, 2.0)
                    + 0.5j * _gaussian((H, W), 16.4 + dy, 15.2 + dx, 2.2))
        np.testing.assert_allclose(out[b], analytic, atol=1e-6)
    # a wrong sign convention would be far off
    assert np.abs(out[0] - np.fft.ifft2(scipy.ndimage.fourier_shift(np.fft.fft2(blob),
                                                                      -offs[0]))).max() > 0.1


def test_translate_fourier_real_input_stays_real_and_matches_complex_path():
    rng = _rng(3)
    img = scipy.ndimage.gaussian_filter(rng.standard_normal((2, 16, 20)), 2.0)
    offs = np.array([[0.5, 0.5], [-1.3, 2.2]])
    out_r = ph.translate(img.astype(np.float32), offs, "fourier")
    out_c = ph.translate(img.astype(np.complex128), offs, "fourier")
    assert out_r.dtype == np.float32
    np.testing.assert_allclose(out_r, out_c.real, atol=1e-6)


@pytest.mark.parametrize("interp,tol", [("fourier", 1e-6), ("bilinear", 0.1)])
def test_translate_there_and_back_on_band_limited_content(interp, tol):
    H, W = 32, 32
    blob = _gaussian((H, W), 16.0, 15.0, 2.5) * np.exp(1j * 0.3 * _gaussian((H, W), 16, 16, 5))
    d = np.array([[1.3, -0.6], [0.5, 0.5], [-2.75, 3.2]])
    imgs = np.repeat(blob[None], 3, axis=0)
    back = ph.translate(ph.translate(imgs, d, interp), -d, interp)
    err = np.abs(back - imgs).max() / np.abs(imgs).max()
    assert err < tol
    if interp == "bilinear":
        assert err > 1e-3  # bilinear blurs: the round trip is not the identity


@pytest.mark.parametrize("interp", INTERPS)
def test_translate_adjoint_is_negative_shift(interp):
    rng = _rng(4)
    x = _cplx(rng, (3, 10, 12))
    y = _cplx(rng, (3, 10, 12))
    d = np.array([[0.3, -2.6], [1.5, 0.0], [-0.75, 4.2]])
    lhs = np.vdot(ph.translate(x, d, interp), y)
    rhs = np.vdot(x, ph.translate(y, -d, interp))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_translate_validation_and_empty_batch():
    imgs = np.zeros((3, 4, 4), dtype=np.complex64)
    with pytest.raises(ValueError, match="offsets has 2 rows but there are 3 images"):
        ph.translate(imgs, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="offsets has 6 rows"):
        ph.translate(imgs, np.zeros((6, 2)))
    with pytest.raises(ValueError, match="shape"):
        ph.translate(imgs, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        ph.translate(imgs, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="interpolation"):
        ph.translate(imgs, np.zeros((3, 2)), "cubic")
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        ph.translate(imgs[0], np.zeros((4, 2)))
    for interp in INTERPS:
        out = ph.translate(np.zeros((0, 5, 6), np.float32), np.zeros((0, 2)), interp)
        assert out.shape == (0, 5, 6) and out.dtype == np.float32


# ---------------------------------------------------------------------------- extract / reassemble
@pytest.mark.parametrize("interp", INTERPS)
def test_extract_integer_positions_are_exact_slices_with_zero_fill(interp):
    rng = _rng(5)
    obj = _cplx(rng, (20, 24), np.complex64)
    pos = np.array([[10, 12], [4, 4], [0, 23], [19, 0], [-3, 30]], dtype=float)
    N = 8
    p = ph.extract_patches(obj, pos, N, interp)
    assert p.shape == (5, N, N) and p.dtype == np.complex64
    padded = np.pad(obj, 20)
    for m, (y, x) in enumerate(pos.astype(int)):
        np.testing.assert_array_equal(p[m], padded[20 + y - 4:20 + y + 4, 20 + x - 4:20 + x + 4])
    np.testing.assert_array_equal(p[0], obj[6:14, 8:16])


def test_extract_bilinear_fractional_is_bilinear_sampling():
    rng = _rng(6)
    obj = rng.standard_normal((15, 17))
    pos = np.array([[7.25, 8.5], [0.9, 15.3]])
    N = 6
    p = ph.extract_patches(obj, pos, N)

    def sample(yy, xx):
        y0, x0 = int(np.floor(yy)), int(np.floor(xx))
        wy, wx = yy - y0, xx - x0
        v = 0.0
        for ty, fy in ((y0, 1 - wy), (y0 + 1, wy)):
            for tx, fx in ((x0, 1 - wx), (x0 + 1, wx)):
                if 0 <= ty < 15 and 0 <= tx < 17:
                    v += fy * fx * obj[ty, tx]
        return v

    for m in range(2):
        for i in range(N):
            for j in range(N):
                want = sample(pos[m, 0] - N // 2 + i, pos[m, 1] - N // 2 + j)
                assert p[m, i, j] == pytest.approx(want, abs=1e-12)


def test_extract_fourier_fractional_on_band_limited_object():
    """Against the exact band-limited interpolation of a periodic smooth object."""
    rng = _rng(17)
    H = W = 96
    N = 32
    obj = _smooth_object(rng, H, W, sigma=3.0)
    spec = np.fft.fft2(obj)
    pos = rng.uniform(30, 66, size=(6, 2))
    p_f = ph.extract_patches(obj, pos, N, "fourier")
    p_b = ph.extract_patches(obj, pos, N, "bilinear")
    err_f, err_b = [], []
    for m, (y, x) in enumerate(pos):
        iy, ix = int(np.floor(y)), int(np.floor(x))
        shifted = np.fft.ifft2(scipy.ndimage.fourier_shift(spec, (iy - y, ix - x)))
        want = shifted[iy - N // 2:iy + N // 2, ix - N // 2:ix + N // 2]
        err_f.append(np.abs(p_f[m] - want).max())
        err_b.append(np.abs(p_b[m] - want).max())
    scale = np.abs(obj).max()
    assert max(err_f) / scale < 3e-3
    assert max(err_b) / scale > 10 * max(err_f) / scale  # bilinear blurs, Fourier does not


@pytest.mark.parametrize("interp", INTERPS)
def test_reassemble_is_adjoint_of_extract(interp):
    rng = _rng(7)
    H, W, N = 30, 26, 8
    pos = np.array([[10, 12], [15.3, 8.7], [2.5, 24.9], [28.1, 1.2], [14.0, 13.5]])
    x = _cplx(rng, (5, N, N))
    y = _cplx(rng, (H, W))
    fwd = ph.extract_patches(y, pos, N, interp)
    adj, _ = ph.reassemble_patches(x, pos, (H, W), interp)
    assert np.vdot(x, fwd) == pytest.approx(np.vdot(adj, y), rel=1e-12)


@pytest.mark.parametrize("interp", INTERPS)
def test_extract_after_reassemble_is_identity_on_full_coverage(interp):
    rng = _rng(8)
    H, W, N = 24, 28, 8
    obj = _cplx(rng, (H, W), np.complex64)
    ys, xs = np.meshgrid(np.r_[np.arange(4, H - 4, 3), H - 4],
                         np.r_[np.arange(4, W - 4, 3), W - 4], indexing="ij")
    pos = np.stack([ys.ravel(), xs.ravel()], axis=1).astype(float)
    patches = ph.extract_patches(obj, pos, N, interp)
    canvas, weight = ph.reassemble_patches(patches, pos, (H, W), interp)
    assert canvas.dtype == np.complex64 and weight.dtype == np.float32
    assert np.all(weight >= 1)  # the scan covers every pixel
    stitched = ph.normalize_overlap(canvas, weight)
    np.testing.assert_allclose(stitched, obj, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ph.extract_patches(stitched, pos, N, interp), patches,
                               rtol=1e-6, atol=1e-6)


def test_reassemble_integer_placement_and_weight_by_hand():
    patches = np.ones((2, 4, 4), dtype=np.float32)
    patches[1] *= 3
    canvas, weight = ph.reassemble_patches(patches, [[2, 2], [2, 4]], (5, 8))
    # patch centre pixel 2 lands on the position: patch 0 covers rows 0..3, cols 0..3
    want_w = np.zeros((5, 8))
    want_w[0:4, 0:4] += 1
    want_w[0:4, 2:6] += 1
    np.testing.assert_array_equal(weight, want_w)
    want_c = np.zeros((5, 8))
    want_c[0:4, 0:4] += 1
    want_c[0:4, 2:6] += 3
    np.testing.assert_array_equal(canvas, want_c)
    norm = ph.normalize_overlap(canvas, weight)
    assert norm[0, 2] == 2.0 and norm[0, 0] == 1.0 and norm[0, 5] == 3.0 and norm[4, 0] == 0.0
    # footprint with zeros: the same footprint counts in the weight
    fp = np.zeros((4, 4))
    fp[1:3, 1:3] = 1
    _, w = ph.reassemble_patches(patches * fp, [[2, 2]] * 2, (5, 8), footprint=fp)
    assert w.sum() == 8 and w[1:3, 1:3].min() == 2


def test_normalize_overlap_threshold():
    c = np.array([1.0, 2.0, 3.0])
    w = np.array([1e-4, 1e-3, 0.5])
    np.testing.assert_array_equal(ph.normalize_overlap(c, w), [0.0, 0.0, 6.0])
    with pytest.raises(ValueError, match="shapes differ"):
        ph.normalize_overlap(c, w[:2])


def test_extract_reassemble_validation():
    with pytest.raises(ValueError, match="positions has 1 rows but there are 2 patches"):
        ph.reassemble_patches(np.zeros((2, 4, 4)), [[1, 1]], (8, 8))
    with pytest.raises(ValueError, match="footprint"):
        ph.reassemble_patches(np.zeros((1, 4, 4)), [[1, 1]], (8, 8), footprint=np.ones((3, 3)))
    with pytest.raises(ValueError, match="patch side N"):
        ph.extract_patches(np.zeros((8, 8)), [[1, 1]], 0)
    with pytest.raises(ValueError, match=r"obj must have shape \(H, W\)"):
        ph.extract_patches(np.zeros((2, 8, 8)), [[1, 1]], 4)
    assert ph.extract_patches(np.zeros((8, 8)), np.zeros((0, 2)), 4).shape == (0, 4, 4)


# ---------------------------------------------------------------------------- group_reassemble
def _group_case(rng, B, C, N, integer=True):
    """Patches cut out of one object at group centre + offsets, consistent by construction."""
    H = W = 4 * N
    obj = _cplx(rng, (H, W))
    centres = rng.uniform(1.5 * N, H - 1.5 * N, size=(B, 2)).round()
    offs = rng.integers(-N // 4, N // 4 + 1, size=(B, C, 2)).astype(float)
    if not integer:
        offs = offs + rng.uniform(-0.5, 0.5, size=offs.shape)
    pos = centres[:, None, :] + offs
    patches = ph.extract_patches(obj, pos.reshape(-1, 2), N).reshape(B, C, N, N)
    return obj, patches, offs


@pytest.mark.parametrize("interp", INTERPS)
@pytest.mark.parametrize("B", [1, 7, 16, 64])
def test_group_reassemble_consistent_patches_come_back_unchanged(interp, B):
    rng = _rng(9)
    N, C = 8, 4
    _, patches, offs = _group_case(rng, B, C, N)
    out = ph.group_reassemble(patches.astype(np.complex64), offs, interpolation=interp)
    assert out.shape == (B, C, N, N) and out.dtype == np.complex64
    np.testing.assert_allclose(out, patches, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("interp,tol", [("fourier", 1e-2), ("bilinear", 8e-2)])
def test_group_reassemble_fractional_offsets_band_limited(interp, tol):
    """Patches of one compact band-limited object (a narrow Gaussian blob), sampled exactly at
    member position = centre + fractional offset, come back nearly unchanged, and with the
    offsets' sign flipped they do not: the sign convention matches the object. (Fourier's
    residual comes from the ringing count of the hard-edged footprint; bilinear blurs.)"""
    N = 32
    offs = np.array([[[-2.3, -1.6], [-2.1, 2.4], [1.7, -2.2], [2.6, 1.9]]])
    blob_y, blob_x = 0.4, -0.7  # blob position relative to the group centre
    patches = np.stack([
        _gaussian((N, N), N // 2 + blob_y - dy, N // 2 + blob_x - dx, 2.5)
        * np.exp(0.5j * _gaussian((N, N), N // 2 + blob_y - dy, N // 2 + blob_x - dx, 4.0))
        for dy, dx in offs[0]
    ])[None]
    out = ph.group_reassemble(patches, offs, interpolation=interp)
    assert np.abs(out - patches).max() < tol
    flipped = ph.group_reassemble(patches, -offs, interpolation=interp)
    assert np.abs(flipped - patches).max() > 0.2


def test_group_reassemble_is_never_amplified():
    """Random (inconsistent) patches at fractional offsets: bilinear averages are convex
    combinations, Fourier with its 0.5 coverage threshold stays bounded too."""
    rng = _rng(18)
    N = 16
    p = _cplx(rng, (16, 4, N, N))
    offs = rng.uniform(-4, 4, size=(16, 4, 2))
    peak = np.abs(p).max()
    assert np.abs(ph.group_reassemble(p, offs, interpolation="bilinear")).max() <= peak * (1 + 1e-12)
    assert np.abs(ph.group_reassemble(p, offs, interpolation="fourier")).max() < 1.5 * peak
    # with the bilinear threshold the Fourier count's ringing tails would amplify
    amplified = ph.group_reassemble(p, offs, interpolation="fourier", threshold=1e-3)
    assert np.abs(amplified).max() > 3 * peak


def test_group_reassemble_bilinear_constant_patches_exact():
    p = np.full((3, 4, 8, 8), 2.0 - 1.0j)
    offs = _rng(19).uniform(-2, 2, size=(3, 4, 2))
    np.testing.assert_allclose(ph.group_reassemble(p, offs), p, rtol=1e-12)


@pytest.mark.parametrize("interp", INTERPS)
def test_group_reassemble_groups_are_independent(interp):
    rng = _rng(11)
    B, C, N = 16, 4, 8
    patches = _cplx(rng, (B, C, N, N))
    offs = rng.uniform(-2, 2, size=(B, C, 2))
    out = ph.group_reassemble(patches, offs, interpolation=interp)
    # every group alone gives the same result as inside any batch
    for b in (0, 5, 15):
        alone = ph.group_reassemble(patches[b:b + 1], offs[b:b + 1], interpolation=interp)
        np.testing.assert_allclose(out[b:b + 1], alone, rtol=1e-12, atol=1e-12)
    perturbed = patches.copy()
    perturbed[3] += 10.0
    out2 = ph.group_reassemble(perturbed, offs, interpolation=interp)
    others = [b for b in range(B) if b != 3]
    np.testing.assert_array_equal(out2[others], out[others])
    assert np.abs(out2[3] - out[3]).max() > 1.0


def test_group_reassemble_averages_overlap_by_hand():
    # two constant patches, offsets +-1 column: overlap averages, non-overlap keeps its own value
    N = 4
    patches = np.stack([np.full((N, N), 1.0), np.full((N, N), 3.0)])[None]
    offs = np.array([[[0.0, -1.0], [0.0, 1.0]]])
    out = ph.group_reassemble(patches, offs, pad=2)
    # patch 0 spans canvas cols 1..4, patch 1 cols 3..6 -> cols 3,4 average to 2
    np.testing.assert_array_equal(out[0, 0], np.tile([1.0, 1.0, 2.0, 2.0], (N, 1)))
    np.testing.assert_array_equal(out[0, 1], np.tile([2.0, 2.0, 3.0, 3.0], (N, 1)))


@pytest.mark.parametrize("interp", INTERPS)
def test_group_reassemble_gridsize_one_returns_input(interp):
    rng = _rng(12)
    patches = _cplx(rng, (7, 1, 8, 8), np.complex64)
    out = ph.group_reassemble(patches, np.zeros((7, 1, 2)), interpolation=interp)
    np.testing.assert_array_equal(out, patches)


def test_group_reassemble_footprint_and_validation():
    rng = _rng(13)
    N = 8
    fp = np.zeros((N, N))
    fp[2:6, 2:6] = 1
    patches = _cplx(rng, (2, 1, N, N)) * fp
    out = ph.group_reassemble(patches, np.zeros((2, 1, 2)), footprint=fp)
    np.testing.assert_allclose(out, patches)
    with pytest.raises(ValueError, match=r"offsets must have shape \(B, C, 2\) = \(2, 1, 2\)"):
        ph.group_reassemble(patches, np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match="pad"):
        ph.group_reassemble(patches, np.zeros((2, 1, 2)), pad=-1)


# ---------------------------------------------------------------------------- forward model
def test_far_field_parseval_and_centre():
    rng = _rng(14)
    psi = _cplx(rng, (3, 16, 16), np.complex64)
    F = ph.far_field(psi)
    assert F.dtype == np.complex64
    np.testing.assert_allclose(np.sum(np.abs(F) ** 2, axis=(1, 2)),
                               np.sum(np.abs(psi) ** 2, axis=(1, 2)), rtol=1e-5)
    flat = np.ones((16, 16), dtype=np.complex128)
    Ff = ph.far_field(flat)
    assert Ff[8, 8] == pytest.approx(16.0)  # sum / sqrt(N*N) at the centre pixel N//2
    assert np.abs(Ff).sum() == pytest.approx(16.0)
    np.testing.assert_allclose(F, np.fft.fftshift(np.fft.fft2(psi.astype(np.complex128)) / 16,
                                                  axes=(-2, -1)), rtol=1e-5, atol=1e-6)


def test_illuminate_and_diffraction_amplitude():
    rng = _rng(15)
    probe = _cplx(rng, (8, 8), np.complex64)
    obj = _cplx(rng, (2, 3, 8, 8), np.complex64)
    psi = ph.illuminate(obj, probe)
    assert psi.shape == (2, 3, 8, 8) and psi.dtype == np.complex64
    np.testing.assert_allclose(psi[1, 2], probe * obj[1, 2], rtol=1e-6)
    amp = ph.diffraction_amplitude(obj, probe)
    assert amp.dtype == np.float32
    np.testing.assert_allclose(amp, np.abs(ph.far_field(psi)), rtol=1e-5)
    # unit object and a normalised probe give normalised input: sum A^2 = (N/2)^2
    from ptycho.probe import default_probe
    P = default_probe(16)
    a = ph.diffraction_amplitude(np.ones((1, 16, 16), np.complex64), P)
    assert np.sum(a**2) == pytest.approx(64.0, rel=1e-5)
    with pytest.raises(ValueError, match="probe shape"):
        ph.illuminate(obj, probe[:4])


# ---------------------------------------------------------------------------- photon statistics
def test_poisson_nll_matches_scipy():
    rng = _rng(16)
    lam = rng.uniform(0.01, 50, size=200)
    K = rng.poisson(lam).astype(float)
    full = ph.poisson_nll_full(lam, K)
    np.testing.assert_allclose(full, -scipy.stats.poisson.logpmf(K, lam), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ph.poisson_nll(lam, K), lam - K * np.log(lam), rtol=1e-12)
    assert full.dtype == np.float64


def test_poisson_nll_floor():
    nll = ph.poisson_nll(np.array([0.0, -1.0, 1e-9]), np.array([2.0, 0.0, 1.0]))
    np.testing.assert_allclose(nll, [1e-8 - 2 * np.log(1e-8), 1e-8, 1e-8 - np.log(1e-8)])
    assert np.all(np.isfinite(ph.poisson_nll(0.0, 5.0)))
    with pytest.raises(ValueError, match="floor"):
        ph.poisson_nll(1.0, 1.0, floor=0.0)


def test_poisson_sample_statistics_and_determinism():
    lam = np.full((200, 50), 7.5, dtype=np.float32)
    k1 = ph.poisson_sample(lam, np.random.default_rng(3))
    k2 = ph.poisson_sample(lam, 3)
    np.testing.assert_array_equal(k1, k2)
    assert k1.dtype == np.float64 and np.all(k1 == np.round(k1))
    assert k1.mean() == pytest.approx(7.5, rel=0.02) and k1.var() == pytest.approx(7.5, rel=0.05)
    with pytest.raises(ValueError, match=">= 0"):
        ph.poisson_sample(np.array([-1.0]), 0)
    with pytest.raises(TypeError, match="Generator"):
        ph.poisson_sample(lam, None)


def test_scales_on_known_numbers():
    amps = np.zeros((2, 4, 4), dtype=np.float32)
    amps[0, 0, 0] = 3.0  # 9 photons
    amps[1, 1, :] = 2.0  # 16 photons
    assert ph.mean_photons(amps) == pytest.approx(12.5)
    f = ph.normalization_factor(amps)
    assert f == pytest.approx(np.sqrt(12.5) / 2.0)
    X = ph.normalize_amplitudes(amps, f)
    assert X.dtype == np.float32
    assert np.mean(np.sum(X.astype(np.float64) ** 2, axis=(1, 2))) == pytest.approx(4.0, rel=1e-6)
    assert ph.intensity_scale(1e6, 64) == pytest.approx(1000.0 / 32.0)
    assert ph.intensity_scale(ph.mean_photons(amps), 4) == pytest.approx(f)
    # lam = (s * X)^2 gives back the counts
    np.testing.assert_allclose((ph.intensity_scale(12.5, 4) * X) ** 2, amps**2, rtol=1e-5)


def test_scales_validation():
    with pytest.raises(ValueError, match="all zero"):
        ph.normalization_factor(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        ph.mean_photons(np.full((1, 4, 4), np.nan))
    with pytest.raises(ValueError, match=">= 0"):
        ph.mean_photons(-np.ones((1, 4, 4)))
    with pytest.raises(ValueError, match="no patterns"):
        ph.mean_photons(np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="mean_photons"):
        ph.intensity_scale(0.0, 64)
    with pytest.raises(ValueError, match="positive finite"):
        ph.normalize_amplitudes(np.ones((1, 4, 4)), float("nan"))


def test_dtypes_integer_input_and_broadcasting():
    img = np.arange(12, dtype=np.int32).reshape(1, 3, 4)
    out = ph.translate(img, [[1.0, 0.0]])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[0, 1:], img[0, :-1])
    nll = ph.poisson_nll(np.array([[1.0], [2.0]], dtype=np.float32), np.array([0.0, 1.0, 3.0]))
    assert nll.shape == (2, 3) and nll.dtype == np.float64
    assert nll[1, 2] == pytest.approx(2.0 - 3.0 * np.log(2.0))
    p = ph.extract_patches(np.ones((6, 6), np.float32), [[3, 3]], 4, "fourier")
    assert p.dtype == np.float32
