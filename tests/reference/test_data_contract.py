"""Data contract: loading, conversion and the error message for every kind of malformed input."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from ptycho.data.contract import (DataContractError, PtychoData, load_npz, save_npz,
                                  validate_arrays)

M, N, H = 6, 8, 32


def valid_arrays(with_object: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "diff3d": (rng.random((M, N, N)) + 0.05).astype(np.float32),
        "xcoords": np.linspace(4.0, 27.5, M),
        "ycoords": np.linspace(27.0, 4.0, M),
        "probeGuess": (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
    }
    if with_object:
        arrays["objectGuess"] = np.exp(1j * rng.random((H, H))).astype(np.complex64)
    return arrays


def write(tmp_path, arrays, name="scan.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def load_error(tmp_path, arrays, name="scan.npz") -> str:
    path = write(tmp_path, arrays, name)
    with pytest.raises(DataContractError) as info:
        load_npz(path)
    message = str(info.value)
    assert str(path) in message
    return message


# ------------------------------------------------------------------------------------------
# valid data
# ------------------------------------------------------------------------------------------

def test_valid_file_loads_with_canonical_dtypes(tmp_path):
    arrays = valid_arrays()
    data = load_npz(write(tmp_path, arrays))
    assert (data.M, data.N) == (M, N)
    assert data.diffraction.dtype == np.float32 and data.diffraction.shape == (M, N, N)
    assert data.xcoords.dtype == np.float64 and data.ycoords.dtype == np.float64
    assert data.probe.dtype == np.complex64 and data.object.dtype == np.complex64
    assert data.scan_index.dtype == np.int64 and not data.scan_index.any()
    assert data.xcoords_start is None and data.ycoords_start is None
    np.testing.assert_array_equal(data.diffraction, arrays["diff3d"])
    np.testing.assert_array_equal(data.positions, np.stack([arrays["ycoords"],
                                                            arrays["xcoords"]], axis=1))
    assert data.source.endswith("scan.npz")
    with pytest.raises(ValueError):
        data.diffraction[0, 0, 0] = 1.0          # read-only
    with pytest.raises(AttributeError):
        data.probe = None                        # frozen


def test_save_load_round_trip_is_atomic_and_exact(tmp_path):
    arrays = valid_arrays()
    arrays["scan_index"] = np.array([0, 0, 1, 1, 2, 2])
    arrays["xcoords_start"] = arrays["xcoords"] + 0.25
    arrays["ycoords_start"] = arrays["ycoords"] - 0.25
    data = validate_arrays(arrays)
    out = tmp_path / "out.npz"
    save_npz(out, data)
    assert sorted(os.listdir(tmp_path)) == ["out.npz"]          # no temporary left behind
    with np.load(out, allow_pickle=False) as raw:
        assert sorted(raw.files) == sorted(["diff3d", "xcoords", "ycoords", "probeGuess",
                                            "objectGuess", "scan_index", "xcoords_start",
                                            "ycoords_start"])
    back = load_npz(out)
    for name in ("diffraction", "xcoords", "ycoords", "probe", "object", "scan_index",
                 "xcoords_start", "ycoords_start"):
        a, b = getattr(data, name), getattr(back, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_save_without_object_omits_key(tmp_path):
    data = validate_arrays(valid_arrays(with_object=False))
    save_npz(tmp_path / "a.npz", data)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as raw:
        assert "objectGuess" not in raw.files
    assert load_npz(tmp_path / "a.npz").object is None


def test_alias_diffraction_accepted(tmp_path):
    arrays = valid_arrays()
    arrays["diffraction"] = arrays.pop("diff3d")
    data = load_npz(write(tmp_path, arrays))
    np.testing.assert_array_equal(data.diffraction, arrays["diffraction"])


def test_both_diffraction_keys_refused(tmp_path):
    arrays = valid_arrays()
    arrays["diffraction"] = arrays["diff3d"]
    message = load_error(tmp_path, arrays)
    assert "'diff3d'" in message and "'diffraction'" in message


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint32])
def test_integer_counts_become_sqrt_amplitude(tmp_path, dtype):
    top = np.iinfo(dtype).max if dtype in (np.uint8, np.uint16) else 1_000_000
    counts = np.random.default_rng(2).integers(0, top, size=(M, N, N), endpoint=True)
    counts[:, 0, 0] = top                         # extreme value present, no empty pattern
    arrays = valid_arrays()
    arrays["diff3d"] = counts.astype(dtype)
    data = load_npz(write(tmp_path, arrays))
    assert data.diffraction.dtype == np.float32
    expected = np.sqrt(counts.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(data.diffraction, expected)


def test_uint16_counts_do_not_overflow():
    arrays = valid_arrays()
    arrays["diff3d"] = np.full((M, N, N), 65535, dtype=np.uint16)
    data = validate_arrays(arrays)
    # squaring or summing in uint16 would wrap; amplitude**2 must give the counts back
    np.testing.assert_allclose(data.diffraction.astype(np.float64) ** 2, 65535.0, rtol=1e-6)


def test_legacy_layout_is_transposed():
    arrays = valid_arrays()
    stack = arrays["diff3d"]
    arrays["diff3d"] = np.ascontiguousarray(np.moveaxis(stack, 0, 2))   # (N, N, M)
    data = validate_arrays(arrays)
    np.testing.assert_array_equal(data.diffraction, stack)


def test_real_probe_and_object_are_cast_to_complex():
    arrays = valid_arrays()
    arrays["probeGuess"] = np.ones((N, N), dtype=np.float64)
    arrays["objectGuess"] = np.ones((H, H), dtype=np.int32)
    data = validate_arrays(arrays)
    assert data.probe.dtype == np.complex64 and data.object.dtype == np.complex64
    np.testing.assert_array_equal(data.probe, np.ones((N, N)))


def test_integral_float_scan_index_accepted():
    arrays = valid_arrays()
    arrays["scan_index"] = np.array([0.0, 0.0, 1.0, 1.0, 2.0, 2.0])
    data = validate_arrays(arrays)
    assert data.scan_index.dtype == np.int64
    np.testing.assert_array_equal(data.scan_index, [0, 0, 1, 1, 2, 2])


def test_extra_keys_are_ignored(tmp_path):
    arrays = valid_arrays()
    arrays["Y"] = np.zeros((M, N, N, 1), dtype=np.complex64)
    arrays["notes"] = np.array(["anything"])
    assert load_npz(write(tmp_path, arrays)).M == M


def test_direct_construction_validates_and_select_subsets():
    arrays = valid_arrays()
    data = PtychoData(diffraction=arrays["diff3d"].astype(np.float64), xcoords=arrays["xcoords"],
                      ycoords=arrays["ycoords"], probe=arrays["probeGuess"],
                      object=arrays["objectGuess"])
    assert data.diffraction.dtype == np.float32 and data.source == "<memory>"
    assert data.scan_index.shape == (M,)
    sub = data.select(np.array([4, 1]))
    assert sub.M == 2
    np.testing.assert_array_equal(sub.diffraction, data.diffraction[[4, 1]])
    np.testing.assert_array_equal(sub.xcoords, data.xcoords[[4, 1]])
    assert sub.probe is data.probe and sub.object is data.object
    with pytest.raises(DataContractError, match="no patterns"):
        data.select(np.zeros(M, dtype=bool))
    with pytest.raises(DataContractError, match="'probeGuess'"):
        PtychoData(diffraction=arrays["diff3d"], xcoords=arrays["xcoords"],
                   ycoords=arrays["ycoords"], probe=np.ones((N, N + 1)))


# ------------------------------------------------------------------------------------------
# malformed files: every message names the file, the key, expected and actual
# ------------------------------------------------------------------------------------------

def test_missing_key_lists_present_keys(tmp_path):
    arrays = valid_arrays()
    del arrays["probeGuess"]
    message = load_error(tmp_path, arrays)
    assert "missing required key(s) 'probeGuess'" in message
    assert "['diff3d', 'objectGuess', 'xcoords', 'ycoords']" in message


def test_missing_diffraction_mentions_alias(tmp_path):
    arrays = valid_arrays()
    del arrays["diff3d"]
    message = load_error(tmp_path, arrays)
    assert "'diff3d' (or 'diffraction')" in message


def test_empty_archive(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path)
    with pytest.raises(DataContractError, match="keys present: none"):
        load_npz(path)


@pytest.mark.parametrize("content, fragment", [
    (b"this is not a numpy file at all", "not an NPZ archive"),
    (b"", "the file is empty"),
    (b"PK\x03\x04truncated zip", "not a readable NPZ archive"),
])
def test_not_an_npz(tmp_path, content, fragment):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(DataContractError) as info:
        load_npz(path)
    assert fragment in str(info.value) and str(path) in str(info.value)
    assert "pickle" not in str(info.value)


def test_npy_file_instead_of_npz(tmp_path):
    path = tmp_path / "single.npy"
    np.save(path, np.zeros((3, 4)))
    with pytest.raises(DataContractError, match=r"single \.npy array \(shape \(3, 4\)"):
        load_npz(path)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(DataContractError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(DataContractError, match="is a directory"):
        load_npz(tmp_path)


def test_object_array_is_refused_without_unpickling(tmp_path):
    arrays = valid_arrays()
    arrays["xcoords"] = np.array([1.0, "a", None] * 2, dtype=object)
    message = load_error(tmp_path, arrays)
    assert "key 'xcoords'" in message and "object array" in message


def test_string_array_is_refused(tmp_path):
    arrays = valid_arrays()
    arrays["ycoords"] = np.array(["1"] * M)
    message = load_error(tmp_path, arrays)
    assert "key 'ycoords'" in message and "expected a numeric array" in message and "<U1" in message


def _set(key, value):
    def mutate(arrays):
        arrays[key] = value(arrays) if callable(value) else value
    return mutate


def _nan_at(key, index, value=np.nan):
    def mutate(arrays):
        arr = arrays[key].copy()
        arr[index] = value
        arrays[key] = arr
    return mutate


CASES = {
    "diff_rank2": (_set("diff3d", np.ones((N, N), np.float32)),
                   ["key 'diff3d'", "expected 3-D", "(M, N, N)", "shape (8, 8)"]),
    "diff_rank4": (_set("diff3d", np.ones((M, N, N, 1), np.float32)),
                   ["key 'diff3d'", "expected 3-D", "shape (6, 8, 8, 1)"]),
    "diff_non_square": (_set("diff3d", np.ones((M, N, N - 2), np.float32)),
                        ["key 'diff3d'", "square", "8 x 6", "shape (6, 8, 6)"]),
    "diff_complex": (_set("diff3d", np.ones((M, N, N), np.complex64)),
                     ["key 'diff3d'", "real float", "complex64"]),
    "diff_bool": (_set("diff3d", np.ones((M, N, N), bool)), ["key 'diff3d'", "dtype bool"]),
    "diff_nan": (_nan_at("diff3d", (2, 3, 4)),
                 ["key 'diff3d'", "non-finite", "index [2, 3, 4] = nan", "shape (6, 8, 8)"]),
    "diff_inf": (_nan_at("diff3d", (5, 0, 1), np.inf), ["key 'diff3d'", "[5, 0, 1] = inf"]),
    "diff_negative": (_nan_at("diff3d", (1, 2, 3), -0.5),
                      ["key 'diff3d'", "non-negative amplitudes", "1 negative",
                       "[1, 2, 3] = -0.5"]),
    "diff_negative_counts": (_set("diff3d", lambda a: np.where(np.arange(M)[:, None, None] == 3,
                                                                -2, 5).astype(np.int32)
                                  * np.ones((M, N, N), np.int32)),
                             ["key 'diff3d'", "non-negative photon counts", "= -2"]),
    "diff_float32_overflow": (lambda a: (a.update(diff3d=a["diff3d"].astype(np.float64)),
                                         _nan_at("diff3d", (0, 0, 0), 1e300)(a)),
                              ["key 'diff3d'", "after conversion to float32"]),
    "diff_empty": (_set("diff3d", np.zeros((0, N, N), np.float32)),
                   ["key 'diff3d'", "no diffraction patterns", "M = 0"]),
    "diff_zero_side": (_set("diff3d", np.zeros((M, 0, 0), np.float32)),
                       ["key 'diff3d'", "N >= 1", "shape (6, 0, 0)"]),
    "diff_vs_positions": (_set("diff3d", lambda a: a["diff3d"][:4]),
                          ["key 'diff3d'", "M = 4 patterns", "6 positions"]),
    "zero_patterns": (_set("diff3d", lambda a: a["diff3d"] * (np.arange(M) % 2)[:, None, None]
                           .astype(np.float32)),
                      ["key 'diff3d'", "3 of 6 patterns are all zero", "indices 0, 2, 4)"]),
    "x_vs_y_length": (_set("ycoords", lambda a: a["ycoords"][:-1]),
                      ["key 'ycoords'", "same length as 'xcoords' (6)", "shape (5,)"]),
    "x_rank2": (_set("xcoords", lambda a: a["xcoords"][:, None]),
                ["key 'xcoords'", "expected 1-D", "shape (6, 1)"]),
    "x_complex": (_set("xcoords", lambda a: a["xcoords"].astype(complex)),
                  ["key 'xcoords'", "real positions", "complex128"]),
    "x_inf": (_nan_at("xcoords", 3, np.inf), ["key 'xcoords'", "non-finite", "[3] = inf"]),
    "y_nan": (_nan_at("ycoords", 0), ["key 'ycoords'", "non-finite", "[0] = nan"]),
    "positions_in_metres": (lambda a: a.update(xcoords=a["xcoords"] * 1e-8,
                                               ycoords=a["ycoords"] * 1e-8,
                                               objectGuess=np.ones((H, H), np.complex64)),
                            ["key 'xcoords'", "all 6 scan positions lie within", "object pixels",
                             "divide 'xcoords' and 'ycoords' by the object pixel size"]),
    "both_coords_empty": (_set("xcoords", np.zeros(0)), ["key 'ycoords'", "(0)"]),
    "probe_shape": (_set("probeGuess", np.ones((N + 2, N + 2), np.complex64)),
                    ["key 'probeGuess'", "(N, N) = (8, 8)", "shape (10, 10)"]),
    "probe_rank": (_set("probeGuess", np.ones((1, N, N), np.complex64)),
                   ["key 'probeGuess'", "expected 2-D", "shape (1, 8, 8)"]),
    "probe_bool": (_set("probeGuess", np.ones((N, N), bool)),
                   ["key 'probeGuess'", "complex64 (or real, which is cast)", "dtype bool"]),
    "probe_nan": (_nan_at("probeGuess", (1, 1), complex(np.nan, 0.0)),
                  ["key 'probeGuess'", "non-finite", "index [1, 1]"]),
    "probe_zero": (_set("probeGuess", np.zeros((N, N), np.complex64)),
                   ["key 'probeGuess'", "is all zero", "shape (8, 8)"]),
    "object_nan_imag": (_nan_at("objectGuess", (7, 9), complex(0.0, np.inf)),
                        ["key 'objectGuess'", "non-finite", "index [7, 9]"]),
    "object_rank": (_set("objectGuess", np.ones(H, np.complex64)),
                    ["key 'objectGuess'", "expected 2-D", "shape (32,)"]),
    "object_too_small": (_set("objectGuess", np.ones((H, 20), np.complex64)),
                         ["key 'objectGuess'", "too small", "(32, 20)", "worst is pattern 5",
                          "cols 23.5..30.5", "cols 0..19"]),
    "scan_index_length": (_set("scan_index", np.zeros(M + 1, np.int64)),
                          ["key 'scan_index'", "length M = 6", "shape (7,)"]),
    "scan_index_fraction": (_set("scan_index", np.array([0, 0.5, 1, 1, 2, 2])),
                            ["key 'scan_index'", "non-integer value 0.5 at index 1"]),
    "scan_index_bool": (_set("scan_index", np.zeros(M, bool)),
                        ["key 'scan_index'", "int64", "dtype bool"]),
    "start_half": (_set("xcoords_start", lambda a: a["xcoords"]),
                   ["key 'ycoords_start'", "'xcoords_start' is present", "missing"]),
    "start_length": (lambda a: a.update(xcoords_start=a["xcoords"][:3],
                                        ycoords_start=a["ycoords"]),
                     ["key 'xcoords_start'", "length M = 6", "shape (3,)"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input_message(tmp_path, case):
    mutate, fragments = CASES[case]
    arrays = valid_arrays()
    mutate(arrays)
    message = load_error(tmp_path, arrays, name=f"{case}.npz")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # the same arrays in memory give the same message with the in-memory source name
    with pytest.raises(DataContractError) as info:
        validate_arrays(arrays)
    assert str(info.value).replace("<memory>", str(tmp_path / f"{case}.npz")) == message


def test_zero_pattern_indices_are_truncated():
    arrays = valid_arrays()
    diff = np.ones((20, N, N), np.float32)
    diff[3:15] = 0.0
    arrays.update(diff3d=diff, xcoords=np.full(20, 16.0), ycoords=np.full(20, 16.0))
    with pytest.raises(DataContractError, match=r"12 of 20 patterns are all zero "
                                                r"\(indices 3, 4, 5, 6, 7, \.\.\.\)"):
        validate_arrays(arrays)


def test_object_edge_positions_are_accepted():
    arrays = valid_arrays()
    # patch centred at N//2 starts at row 0; centred at H - N//2 ends at row H - 1
    arrays["xcoords"] = np.array([N // 2, H - N // 2, 10.0, 11.0, 12.0, 13.0], dtype=float)
    arrays["ycoords"] = np.array([H - N // 2, N // 2, 10.0, 11.0, 12.0, 13.0], dtype=float)
    assert validate_arrays(arrays).M == M
    arrays["xcoords"][0] = N // 2 - 0.01
    with pytest.raises(DataContractError, match="worst is pattern 0"):
        validate_arrays(arrays)


def test_single_repeated_and_one_pixel_scans_are_accepted():
    one = {k: (v[:1] if k in ("diff3d", "xcoords", "ycoords") else v)
           for k, v in valid_arrays().items()}
    assert validate_arrays(one).M == 1
    arrays = valid_arrays()
    arrays["xcoords"] = arrays["ycoords"] = np.full(M, 12.0)   # one spot measured M times
    assert validate_arrays(arrays).M == M
    arrays = valid_arrays()
    arrays["xcoords"] = np.full(M, 10.0)
    arrays["ycoords"] = 10.0 + np.linspace(0.0, 1.0, M)
    assert validate_arrays(arrays).M == M


def test_not_a_mapping():
    with pytest.raises(DataContractError, match="expected a mapping"):
        validate_arrays([np.zeros(3)], source="thing")


def test_save_npz_refuses_non_ptychodata(tmp_path):
    with pytest.raises(TypeError):
        save_npz(tmp_path / "x.npz", valid_arrays())


def _centred_patterns(M_: int = 5, n: int = 16, beamstop: bool = False) -> np.ndarray:
    rng = np.random.default_rng(3)
    r2 = np.add.outer((np.arange(n) - n // 2) ** 2, (np.arange(n) - n // 2) ** 2)
    diff = np.exp(-r2 / 8.0)[None] * (1.0 + 0.1 * rng.random((M_, n, n)))
    if beamstop:
        diff = diff * (r2 > 2)
    return diff.astype(np.float32)


@pytest.mark.parametrize("reader", ["eager", "streamed"])
def test_uncentred_patterns_are_warned_about(tmp_path, reader):
    from ptycho.data.contract import DataWarning
    from ptycho.data.stream import open_scan

    read = load_npz if reader == "eager" else open_scan
    arrays = valid_arrays()
    arrays["diff3d"] = np.fft.ifftshift(_centred_patterns(M, N), axes=(-2, -1))
    with pytest.warns(DataWarning, match=r"scan.npz: key 'diff3d': the corners of the patterns "
                                         r"hold more photons .* zero frequency must be at pixel "
                                         r"\(4, 4\) .* numpy.fft.fftshift"):
        read(write(tmp_path, arrays))
    for centred in (_centred_patterns(M, N), _centred_patterns(M, N, beamstop=True),
                    (np.random.default_rng(0).random((M, N, N)) + 0.05).astype(np.float32)):
        arrays["diff3d"] = centred
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            read(write(tmp_path, arrays, name="ok.npz"))


def _cube_scan(M_: int = 16):
    """A scan of M_ centred M_ x M_ patterns (the shape that fits both layouts)."""
    arrays = valid_arrays(with_object=False)
    arrays["diff3d"] = _centred_patterns(M_, M_)
    arrays["xcoords"] = np.linspace(10.0, 40.0, M_)
    arrays["ycoords"] = np.linspace(40.0, 10.0, M_)
    arrays["probeGuess"] = np.ones((M_, M_), np.complex64)
    return arrays


@pytest.mark.parametrize("reader", ["eager", "streamed"])
def test_cube_shaped_stack_is_read_in_the_layout_that_centres_it(tmp_path, reader):
    from ptycho.data.contract import DataWarning
    from ptycho.data.stream import open_scan

    def patterns(path):
        if reader == "eager":
            return load_npz(path).diffraction
        with open_scan(path) as scan:
            return scan.patterns.read(0, scan.M)

    arrays = _cube_scan()
    expected = arrays["diff3d"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        np.testing.assert_array_equal(patterns(write(tmp_path, arrays, "plain.npz")), expected)
    arrays["diff3d"] = np.ascontiguousarray(np.moveaxis(expected, 0, 2))     # (N, N, M)
    with pytest.warns(DataWarning, match=r"fits both .* read as \(N, N, M\)"):
        got = patterns(write(tmp_path, arrays, "legacy.npz"))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("reader", ["eager", "streamed"])
def test_saturated_counts_and_float_counts_are_warned_about(tmp_path, reader):
    from ptycho.data.contract import DataWarning
    from ptycho.data.stream import open_scan

    read = load_npz if reader == "eager" else open_scan
    arrays = valid_arrays()
    counts = np.round(1000 * _centred_patterns(M, N) ** 2)
    arrays["diff3d"] = counts.astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        read(write(tmp_path, arrays, "ok.npz"))
    arrays["diff3d"][2, 0, 3] = 65535
    with pytest.warns(DataWarning, match=r"1 pixels hold 65535, the largest uint16 value"):
        read(write(tmp_path, arrays, "saturated.npz"))
    arrays["diff3d"] = counts.astype(np.float32)
    with pytest.warns(DataWarning, match=r"every value .* whole number .* photon counts stored "
                                         r"as float"):
        read(write(tmp_path, arrays, "float_counts.npz"))
    arrays["diff3d"] = np.sqrt(counts).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        read(write(tmp_path, arrays, "amplitudes.npz"))


def test_identical_positions_are_warned_about(tmp_path):
    from ptycho.data.contract import DataWarning

    arrays = valid_arrays(with_object=False)
    arrays["xcoords"] = np.full(M, 12.5)
    arrays["ycoords"] = np.full(M, 7.0)
    with pytest.warns(DataWarning, match=r"all 6 scan positions are the same point "
                                         r"\(x 12.5, y 7\)"):
        load_npz(write(tmp_path, arrays))
