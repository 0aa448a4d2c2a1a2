"""Stitching of patches into an object."""

import numpy as np
import pytest
import scipy.ndimage

from ptycho.physics import extract_patches
from ptycho.stitch import Stitcher, StitchResult, canvas_for_positions, crop_mask, stitch_patches


def _obj(seed=0, H=40, W=44):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((H, W)) + 1j * rng.standard_normal((H, W))).astype(np.complex64)


def _grid(lo, hi_y, hi_x, step):
    ys, xs = np.meshgrid(np.arange(lo, hi_y, step), np.arange(lo, hi_x, step), indexing="ij")
    return np.stack([ys.ravel(), xs.ravel()], axis=1).astype(float)


@pytest.mark.parametrize("crop", [None, 4])
def test_stitch_reproduces_object_on_scanned_region(crop):
    obj = _obj()
    N = 8
    pos = _grid(6, 34, 38, 3)
    patches = extract_patches(obj, pos, N)
    res = stitch_patches(patches, pos, canvas_shape=obj.shape, crop=crop, batch_size=7)
    assert isinstance(res, StitchResult)
    assert res.obj.dtype == np.complex64 and res.weight.dtype == np.float32
    assert res.scanned_mask.dtype == bool and res.origin == (0, 0)
    m = res.scanned_mask
    np.testing.assert_allclose(res.obj[m], obj[m], rtol=1e-6, atol=1e-6)
    assert np.all(res.obj[~m] == 0)
    # the scanned region is exactly the union of the placed (cropped) blocks
    c = N if crop is None else crop
    want = np.zeros(obj.shape, bool)
    for y, x in pos.astype(int):
        y0 = y - N // 2 + (N - c) // 2
        x0 = x - N // 2 + (N - c) // 2
        want[y0:y0 + c, x0:x0 + c] = True
    np.testing.assert_array_equal(m, want)


def test_stitch_crop_only_uses_central_block():
    N = 8
    patches = np.ones((1, N, N), np.complex64)
    patches[0, 0, :] = 100.0  # outside the central 4x4: must be ignored
    res = stitch_patches(patches, [[10, 10]], canvas_shape=(20, 20), crop=4)
    assert res.scanned_mask.sum() == 16
    np.testing.assert_array_equal(res.obj[res.scanned_mask], 1.0)
    assert res.scanned_mask[8:12, 8:12].all()


def test_stitch_auto_canvas_origin():
    obj = _obj(1)
    N = 8
    pos = _grid(10, 30, 30, 4)
    patches = extract_patches(obj, pos, N)
    res = stitch_patches(patches, pos)
    shape, origin = canvas_for_positions(pos, N)
    assert res.origin == origin == (10 - 4, 10 - 4)
    assert res.obj.shape == shape == (26 - 10 + 8, 26 - 10 + 8)
    y0, x0 = origin
    ref = obj[y0:y0 + shape[0], x0:x0 + shape[1]]
    assert res.scanned_mask.all()
    np.testing.assert_allclose(res.obj, ref, rtol=1e-6, atol=1e-6)


def test_stitch_fractional_positions_fourier_on_smooth_object():
    rng = np.random.default_rng(2)
    H = W = 64
    re = scipy.ndimage.gaussian_filter(rng.standard_normal((H, W)), 3.0, mode="wrap")
    im = scipy.ndimage.gaussian_filter(rng.standard_normal((H, W)), 3.0, mode="wrap")
    obj = (re + 1j * im) / np.abs(re + 1j * im).std()
    N = 32
    pos = _grid(20, 45, 45, 5) + rng.uniform(-0.5, 0.5, size=(25, 2))
    patches = extract_patches(obj, pos, N, "fourier")
    res = stitch_patches(patches, pos, canvas_shape=(H, W), crop=16, interpolation="fourier")
    inner = np.zeros((H, W), bool)
    inner[16:48, 16:48] = True
    assert res.scanned_mask[inner].all()
    scale = np.abs(obj[inner]).max()
    err_f = np.abs(res.obj[inner] - obj[inner]).max() / scale
    assert err_f < 5e-3
    bil = stitch_patches(extract_patches(obj, pos, N), pos, canvas_shape=(H, W), crop=16)
    err_b = np.abs(bil.obj[inner] - obj[inner]).max() / scale
    assert err_f < err_b < 0.2


def test_stitcher_batches_equal_one_call():
    obj = _obj(3)
    N = 8
    pos = _grid(5, 35, 39, 3) + 0.3
    patches = extract_patches(obj, pos, N)
    one = stitch_patches(patches, pos, canvas_shape=obj.shape, crop=6, batch_size=10_000)
    st = Stitcher(obj.shape, N, crop=6)
    for s in range(0, len(pos), 13):
        st.add(patches[s:s + 13], pos[s:s + 13])
    many = st.result()
    assert st.n_patches == len(pos)
    np.testing.assert_allclose(many.obj, one.obj, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(many.weight, one.weight, rtol=1e-6)


def test_stitcher_origin_shifts_positions():
    obj = _obj(4)
    N = 8
    pos = _grid(8, 30, 30, 4)
    patches = extract_patches(obj, pos, N)
    st = Stitcher((30, 30), N, origin=(4, 4))
    st.add(patches, pos)
    res = st.result()
    m = res.scanned_mask
    np.testing.assert_allclose(res.obj[m], obj[4:34, 4:34][m], rtol=1e-6, atol=1e-6)


def test_stitch_validation():
    with pytest.raises(ValueError, match="2 patches but 1 positions"):
        stitch_patches(np.zeros((2, 4, 4)), [[1, 1]])
    with pytest.raises(ValueError, match="crop"):
        stitch_patches(np.zeros((1, 4, 4)), [[1, 1]], crop=5)
    with pytest.raises(ValueError, match="empty"):
        stitch_patches(np.zeros((0, 4, 4)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"shape \(P, 8, 8\)"):
        Stitcher((10, 10), 8).add(np.zeros((1, 4, 4)), [[1, 1]])
    with pytest.raises(ValueError, match="NaN"):
        Stitcher((10, 10), 4).add(np.full((1, 4, 4), np.nan), [[1, 1]])
    assert crop_mask(8, 4).sum() == 16 and crop_mask(8, 4)[2:6, 2:6].all()
    assert not Stitcher((5, 5), 4).result().scanned_mask.any()


def test_probe_weighted_stitch_is_the_intensity_weighted_average():
    from ptycho.probe import default_probe
    from ptycho.stitch import probe_weight

    obj = _obj(3)
    N = 8
    pos = _grid(6, 34, 38, 3)
    w = probe_weight(default_probe(N, diameter=5))
    assert w.max() == pytest.approx(1.0) and w.min() >= 0
    # consistent patches: any positive weighting gives back the object where weight > 0
    res = stitch_patches(extract_patches(obj, pos, N), pos, canvas_shape=obj.shape,
                         pixel_weight=w)
    m = res.scanned_mask
    np.testing.assert_allclose(res.obj[m], obj[m], rtol=1e-5, atol=1e-5)
    # two inconsistent patches: the stitched value is the weight-averaged one
    a, b = np.full((N, N), 1.0 + 0j), np.full((N, N), 3.0 + 0j)
    two = stitch_patches(np.stack([a, b]), np.array([[10.0, 10.0], [10.0, 11.0]]),
                         canvas_shape=(24, 24), pixel_weight=w)
    q = (10, 10)                                 # pixel (4, 4) of patch a, (4, 3) of patch b
    expected = (1.0 * w[4, 4] + 3.0 * w[4, 3]) / (w[4, 4] + w[4, 3])
    assert two.obj[q] == pytest.approx(expected, rel=1e-6)
    assert two.weight[q] == pytest.approx(w[4, 4] + w[4, 3], rel=1e-6)


def test_pixel_weight_validation():
    with pytest.raises(ValueError, match="pixel_weight must be"):
        Stitcher((20, 20), 8, pixel_weight=-np.ones((8, 8)))
    with pytest.raises(ValueError, match="pixel_weight must be"):
        Stitcher((20, 20), 8, pixel_weight=np.ones((4, 4)))
    w = np.zeros((8, 8))
    w[0, 0] = 1.0
    with pytest.raises(ValueError, match="zero on the whole central 4x4 crop"):
        Stitcher((20, 20), 8, crop=4, pixel_weight=w)
