"""Object generators (ptycho.objects) and scan patterns (ptycho.scan)."""

import math

import numpy as np
import pytest

from ptycho.objects import (DEFAULT_FEATURE_DENSITY, band_limit, grf_pattern, lines_pattern,
                            load_image_pattern, make_object)
from ptycho.probe import default_probe
from ptycho.scan import (fermat_scan, make_scan, place_scan, probe_diameter, random_scan,
                         raster_scan, required_size, step_from_overlap)


# ----------------------------------------------------------------------------------- objects

@pytest.mark.parametrize("kind", ["lines", "grf", "points"])
def test_generators_range_dtype_and_seed(kind):
    a = make_object(kind, (48, 64), np.random.default_rng(3))
    b = make_object(kind, (48, 64), np.random.default_rng(3))
    c = make_object(kind, (48, 64), np.random.default_rng(4))
    assert a.shape == (48, 64) and a.dtype == np.complex64
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    amp, ph = np.abs(a), np.angle(a)
    assert amp.min() >= 0.5 - 1e-6 and amp.max() <= 1.0 + 1e-6
    assert ph.min() >= -math.pi / 2 - 1e-6 and ph.max() <= math.pi / 2 + 1e-6
    # The full ranges are used (rescaled patterns), and the two parts are not identical maps.
    assert amp.max() - amp.min() > 0.45
    assert ph.max() - ph.min() > 3.0
    assert abs(np.corrcoef(amp.ravel(), ph.ravel())[0, 1]) < 0.9


def _high_frequency_fraction(img, cutoff=0.4):
    """Fraction of the (Hann-windowed, mean-removed) power above ``cutoff`` cycles/pixel."""
    img = np.asarray(img, dtype=np.float64)
    w = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    spec = np.abs(np.fft.fft2((img - img.mean()) * w)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(img.shape[0]), np.fft.fftfreq(img.shape[1]),
                              indexing="ij"))
    return spec[f > cutoff].sum() / spec.sum()


@pytest.mark.parametrize("kind", ["lines", "grf", "points"])
def test_generators_are_band_limited(kind):
    obj = make_object(kind, (64, 64), np.random.default_rng(0), smoothing=1.0)
    for part in (np.abs(obj), np.angle(obj)):
        assert _high_frequency_fraction(part) < 5e-3
    if kind != "grf":  # without the band limit, lines and points have sharp edges
        raw = make_object(kind, (64, 64), np.random.default_rng(0), smoothing=0.0)
        assert _high_frequency_fraction(np.abs(raw)) > 5e-2


def test_grf_correlation_length_controls_smoothness():
    rng = np.random.default_rng(1)
    short = grf_pattern((128, 128), rng, correlation_length=1.5)
    long = grf_pattern((128, 128), rng, correlation_length=6.0)

    def lag_corr(x, lag):
        return np.corrcoef(x[:, :-lag].ravel(), x[:, lag:].ravel())[0, 1]

    assert abs(short.mean()) < 1e-9 and abs(short.std() - 1) < 1e-9
    # Gaussian autocorrelation with sigma = sqrt(2) * length: exp(-lag^2 / (4 length^2)).
    assert lag_corr(long, 4) == pytest.approx(math.exp(-16 / (4 * 36)), abs=0.1)
    assert lag_corr(short, 4) < 0.2


@pytest.mark.parametrize("kind", ["lines", "points"])
def test_feature_density_sets_the_covered_fraction(kind):
    def covered(density):
        obj = make_object(kind, (128, 128), np.random.default_rng(5), feature_density=density)
        return np.mean(np.abs(obj) < 0.95)          # absorbing features; background is 1.0

    sparse, default, dense = covered(1 / 2000), covered(None), covered(1 / 40)
    assert sparse < default < dense
    assert sparse < 0.5 * default
    same = make_object(kind, (32, 32), np.random.default_rng(1),
                       feature_density=DEFAULT_FEATURE_DENSITY[kind])
    np.testing.assert_array_equal(same, make_object(kind, (32, 32), np.random.default_rng(1)))


def test_lines_texture_does_not_grow_with_the_object():
    def interior_coverage(shape, seed):
        img = lines_pattern(shape, np.random.default_rng(seed))
        cy, cx = shape[0] // 2, shape[1] // 2
        return np.mean(img[cy - 40:cy + 40, cx - 40:cx + 40] > 0.05)

    small = np.mean([interior_coverage((160, 160), s) for s in range(4)])
    large = np.mean([interior_coverage((400, 800), s) for s in range(4)])
    assert 0.2 < small < 0.9
    assert abs(large - small) < 0.1 * small
    with pytest.raises(ValueError, match="length_range must be finite pixel lengths"):
        lines_pattern((16, 16), np.random.default_rng(0), length_range=(5.0, math.inf))


def test_custom_ranges_and_band_limit_constant():
    obj = make_object("grf", (32, 32), np.random.default_rng(0), amplitude_range=(0.2, 0.4),
                      phase_range=(0.0, 1.0))
    assert np.abs(obj).min() == pytest.approx(0.2, abs=1e-5)
    assert np.abs(obj).max() == pytest.approx(0.4, abs=1e-5)
    assert np.angle(obj).min() >= -1e-6 and np.angle(obj).max() <= 1.0 + 1e-6
    assert np.all(band_limit(np.ones((5, 5)), 1.0) == 0.5)


def test_image_object_amplitude_and_separate_phase(tmp_path):
    import matplotlib.image as mpimg

    yy, xx = np.mgrid[0:40, 0:60]
    grad = (xx / 59.0)                       # brightness grows to the right
    rgb = np.stack([grad, grad, grad], axis=-1)
    amp_file = tmp_path / "amp.png"
    mpimg.imsave(amp_file, rgb)
    phase_file = tmp_path / "phase.png"
    mpimg.imsave(phase_file, (yy / 39.0), cmap="gray")  # grows downwards
    obj = make_object(f"image:{amp_file}", (32, 32), np.random.default_rng(0),
                      phase_image=str(phase_file), smoothing=0.5)
    amp, ph = np.abs(obj), np.angle(obj)
    assert amp[:, -1].mean() > amp[:, 0].mean() + 0.3       # bright right -> high amplitude
    assert ph[-1, :].mean() > ph[0, :].mean() + 2.0         # phase from the second image
    assert np.ptp(amp[:, 16]) < 0.05                          # amplitude constant down a column
    same = make_object(f"image:{amp_file}", (32, 32), np.random.default_rng(9), smoothing=0.5)
    assert np.angle(same)[:, -1].mean() > np.angle(same)[:, 0].mean() + 2.0  # phase follows image
    g = load_image_pattern(amp_file, (10, 20))
    assert g.shape == (10, 20) and g.min() == 0.0 and g.max() == 1.0


def test_object_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown object spec 'blobs'"):
        make_object("blobs", (8, 8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not exist"):
        make_object(f"image:{tmp_path / 'missing.png'}", (8, 8), np.random.default_rng(0))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read object image"):
        make_object(f"image:{bad}", (8, 8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="phase_image is only used"):
        make_object("lines", (8, 8), np.random.default_rng(0), phase_image="x.png")
    with pytest.raises(ValueError, match="amplitude_range"):
        make_object("grf", (8, 8), np.random.default_rng(0), amplitude_range=(1.0, 0.5))
    with pytest.raises(ValueError, match="smoothing"):
        make_object("grf", (8, 8), np.random.default_rng(0), smoothing=-1)
    with pytest.raises(ValueError, match="feature_density applies to"):
        make_object("grf", (8, 8), np.random.default_rng(0), feature_density=0.01)
    with pytest.raises(ValueError, match="density must be > 0"):
        make_object("lines", (8, 8), np.random.default_rng(0), feature_density=0.0)


# ----------------------------------------------------------------------------------- scans

def test_probe_diameter_of_default_probe_and_overlap_step():
    d = probe_diameter(default_probe(64))
    assert d == pytest.approx(64 / 3, abs=1.0)
    assert step_from_overlap(20.0, 0.75) == pytest.approx(5.0)
    assert step_from_overlap(20.0, 0.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="overlap"):
        step_from_overlap(20.0, 1.0)
    with pytest.raises(ValueError, match="all zero"):
        probe_diameter(np.zeros((8, 8)))


def _nn_dist(pos):
    d = np.hypot(pos[:, None, 0] - pos[None, :, 0], pos[:, None, 1] - pos[None, :, 1])
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def test_raster_grid():
    pos = raster_scan(10, 3.0)
    assert pos.shape == (10, 2)
    np.testing.assert_array_equal(pos[:5], [[0, 0], [0, 3], [0, 6], [0, 9], [3, 0]])
    np.testing.assert_allclose(_nn_dist(pos), 3.0)


def test_fermat_spacing_matches_step():
    pos = fermat_scan(400, 5.0)
    med = np.median(_nn_dist(pos))
    assert 0.8 * 5.0 < med < 1.2 * 5.0
    # Uniform density: the inner and outer halves of the points fill equal areas.
    r = np.hypot(*(pos - pos.mean(axis=0)).T)
    assert np.sort(r)[199] == pytest.approx(np.sort(r)[-1] / math.sqrt(2), rel=0.05)


def test_random_scan_density_and_seed():
    a = random_scan(300, 4.0, np.random.default_rng(5))
    b = random_scan(300, 4.0, np.random.default_rng(5))
    assert a.tobytes() == b.tobytes()
    side = 4.0 * math.sqrt(300)
    assert a.min() >= 0 and a.max() <= side
    assert a.max() > 0.9 * side


def test_make_scan_jitter_and_origin():
    plain = make_scan("raster", 16, 4.0, np.random.default_rng(0))
    jit = make_scan("raster", 16, 4.0, np.random.default_rng(0), jitter=0.5)
    assert plain.min() == 0.0 and jit.min(axis=0).tolist() == [0.0, 0.0]
    diff = (jit - jit[0]) - (plain - plain[0])
    assert np.abs(diff).max() <= 1.0 + 1e-12 and np.abs(diff).max() > 0.1
    with pytest.raises(ValueError, match="unknown scan pattern 'spiral'"):
        make_scan("spiral", 4, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="jitter"):
        make_scan("raster", 4, 1.0, np.random.default_rng(0), jitter=-1)
    with pytest.raises(ValueError, match="step"):
        make_scan("fermat", 4, 0.0, np.random.default_rng(0))


def test_place_scan_keeps_patches_inside_and_reports_needed_size():
    N, margin = 16, 2
    local = make_scan("fermat", 50, 2.0, np.random.default_rng(0), jitter=0.3)
    ext_y, ext_x = np.ptp(local, axis=0)
    H = required_size(ext_y, N, margin)
    W = required_size(ext_x, N, margin)
    pos = place_scan(local, N, (H, W), margin=margin)
    assert pos[:, 0].min() >= N / 2 + margin and pos[:, 0].max() <= H - N / 2 - margin
    assert pos[:, 1].min() >= N / 2 + margin and pos[:, 1].max() <= W - N / 2 - margin
    # Integer shift: the fractional parts are those of the local pattern.
    shift = pos - local
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)
    with pytest.raises(ValueError, match=f"at least {H} pixels"):
        place_scan(local, N, (H - 2, W), margin=margin)
    # Placement in the right half of a wider object.
    pos2 = place_scan(local, N, (H, W), region_origin=(0, W), margin=margin)
    assert pos2[:, 1].min() >= W + N / 2 + margin
