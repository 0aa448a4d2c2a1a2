"""The illuminated region used by every quality metric."""

import numpy as np
import pytest

from ptycho.illumination import illumination_map, illumination_mask
from ptycho.probe import default_probe, radius_map


def test_single_position_mask_is_the_probe_disk():
    N = 32
    probe = default_probe(N)
    shape = (64, 80)
    mask = illumination_mask(probe, np.array([[30.0, 40.0]]), shape, fraction=0.5)
    intensity = np.abs(probe) ** 2
    expected = np.zeros(shape, dtype=bool)
    expected[30 - N // 2:30 + N // 2, 40 - N // 2:40 + N // 2] = intensity >= 0.5 * intensity.max()
    np.testing.assert_array_equal(mask, expected)
    assert not mask[:, :20].any()


def test_map_sums_positions_and_mask_thresholds_it():
    N = 16
    probe = (radius_map(N) <= 4).astype(np.complex64)
    pos = np.array([[20.0, 20.0], [20.0, 24.0]])
    illum = illumination_map(probe, pos, (40, 48))
    assert illum.max() == pytest.approx(2.0)              # both disks overlap there
    assert illum.sum() == pytest.approx(2 * np.sum(np.abs(probe) ** 2))
    assert illumination_mask(probe, pos, (40, 48), fraction=0.75).sum() == np.sum(illum >= 1.5)


def test_bad_input_is_named():
    probe = default_probe(16)
    with pytest.raises(ValueError, match="fraction"):
        illumination_mask(probe, np.zeros((1, 2)), (20, 20), fraction=1.0)
    with pytest.raises(ValueError, match="positions"):
        illumination_map(probe, np.zeros((3,)), (20, 20))
    with pytest.raises(ValueError, match="illuminates no pixel"):
        illumination_mask(probe, np.array([[500.0, 500.0]]), (20, 20))
