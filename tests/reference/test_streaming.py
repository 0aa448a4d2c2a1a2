"""Streamed inference input: lazy pattern reads, chunked validation, bounded memory.

The eager path (``load_npz`` + ``prepare_grouped_arrays``) is the reference every streamed
result is compared with.
"""

from __future__ import annotations

import gc
import os
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptycho.config import PtychoConfig
from ptycho.data import stream
from ptycho.data.batches import prepare_streamed_groups
from ptycho.data.contract import DataContractError, load_npz
from ptycho.data.lazy import ArrayPatterns, PatternFile
from ptycho.data.prepare import iter_grouped_batches, prepare_grouped_arrays
from ptycho.data.stream import open_scan
from ptycho.inference_core import prepare_scan, stream_and_write
from ptycho.physics import normalization_factor
from ptycho.stitch import Stitcher, canvas_for_positions, probe_weight
from tests.reference import test_data_hypothesis as hyp

N = 32
CHUNK = 5 * N * N * 8          # five patterns per validation chunk: several chunks per scan


def scan_arrays(M: int, seed: int = 0, box: float = 40.0, with_object: bool = False) -> dict:
    """M patterns of float32 amplitude at random positions in a fixed box (fixed canvas)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "diff3d": (rng.random((M, N, N)) + 0.05).astype(np.float32),
        "xcoords": N / 2 + rng.random(M) * box,
        "ycoords": N / 2 + rng.random(M) * box,
        "probeGuess": ((0.2 + rng.random((N, N))) * np.exp(1j * rng.random((N, N)))
                       ).astype(np.complex64),
    }
    if with_object:
        side = int(box) + N + 2
        arrays["objectGuess"] = np.exp(1j * rng.random((side, side))).astype(np.complex64)
    return arrays


def write(path, arrays, compressed=False):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def predictor(X: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for a network: (B, C, N, N) complex patches."""
    phase = 0.1 * offsets[..., 0, None, None] - 0.05 * offsets[..., 1, None, None]
    return (np.sqrt(X) * np.exp(1j * (phase + X))).astype(np.complex64)


def config_for(path, out, gridsize=1, batch_size=7, n_groups=None):
    return PtychoConfig.from_dict({
        "model": {"N": N, "gridsize": gridsize},
        "data": {"n_groups": n_groups, "K": 6, "seed": 3},
        "inference": {"test_data": str(path), "output_dir": str(out),
                      "batch_size": batch_size}})


# ------------------------------------------------------------------------------------------
# lazy reads equal the eager loader
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64", ">f4", "uint16", "int32"])
def test_streamed_scan_equals_load_npz(tmp_path, compressed, dtype):
    arrays = scan_arrays(23, with_object=True)
    if np.dtype(dtype).kind in "iu":
        counts = np.random.default_rng(2).integers(1, 65535, (23, N, N))
        arrays["diff3d"] = counts.astype(dtype)
    else:
        arrays["diff3d"] = arrays["diff3d"].astype(dtype)
    path = write(tmp_path / "scan.npz", arrays, compressed)
    eager = load_npz(path)
    with open_scan(path, chunk_bytes=CHUNK) as scan:
        assert isinstance(scan.patterns, PatternFile)
        assert (scan.M, scan.N, scan.source) == (eager.M, eager.N, eager.source)
        np.testing.assert_array_equal(scan.patterns.read(0, scan.M), eager.diffraction)
        idx = np.array([[22, 3, 4, 5], [0, 0, 21, 9]])
        np.testing.assert_array_equal(scan.patterns.gather(idx), eager.diffraction[idx])
        for name in ("xcoords", "ycoords", "probe", "object", "scan_index", "positions"):
            np.testing.assert_array_equal(getattr(scan, name), getattr(eager, name))
        assert scan.normalization_factor == pytest.approx(
            normalization_factor(eager.diffraction), rel=1e-12)
        assert stream.normalization_factor(scan.patterns, chunk_bytes=3 * N * N * 8) == \
            pytest.approx(normalization_factor(eager.diffraction), rel=1e-12)


def test_uint16_counts_do_not_overflow(tmp_path):
    arrays = scan_arrays(4)
    arrays["diff3d"] = np.full((4, N, N), 65535, dtype=np.uint16)
    with open_scan(write(tmp_path / "c.npz", arrays), chunk_bytes=CHUNK) as scan:
        amp = scan.patterns.read(0, 4)
        assert amp.dtype == np.float32
        np.testing.assert_allclose(amp, np.sqrt(65535.0), rtol=1e-7)
        np.testing.assert_allclose(scan.photons, 65535.0 * N * N, rtol=1e-6)


def test_compressed_copy_is_removed_on_close(tmp_path):
    path = write(tmp_path / "z.npz", scan_arrays(6), compressed=True)
    scan = open_scan(path)
    tmp = scan.patterns._fh.name
    assert os.path.isfile(tmp) and not tmp.startswith(str(tmp_path))
    scan.close()
    assert not os.path.exists(os.path.dirname(tmp))
    stored = open_scan(write(tmp_path / "s.npz", scan_arrays(6)))
    assert stored.patterns._fh.name == str(tmp_path / "s.npz")          # read in place
    stored.close()


def test_legacy_layout_is_read_eagerly(tmp_path):
    arrays = scan_arrays(5)
    arrays["diff3d"] = np.moveaxis(arrays["diff3d"], 0, 2).copy()          # (N, N, M)
    path = write(tmp_path / "legacy.npz", arrays)
    with open_scan(path) as scan:
        assert isinstance(scan.patterns, ArrayPatterns)
        np.testing.assert_array_equal(scan.patterns.read(0, 5), load_npz(path).diffraction)


def test_alias_key_and_other_keys_are_ignored(tmp_path):
    arrays = scan_arrays(5)
    arrays["diffraction"] = arrays.pop("diff3d")
    arrays["extra"] = np.zeros(3)
    with open_scan(write(tmp_path / "alias.npz", arrays)) as scan:
        np.testing.assert_array_equal(scan.patterns.read(0, 5), arrays["diffraction"])


# ------------------------------------------------------------------------------------------
# malformed files: the same DataContractError as the eager loader
# ------------------------------------------------------------------------------------------

def _nan(a):
    a["diff3d"][3, 1, 2] = np.nan
    a["diff3d"][9, 0, 0] = np.inf


def _negative(a):
    a["diff3d"][7, 4, 4] = -1.0
    a["diff3d"][12, 0, 1] = -2.0


def _negative_counts(a):
    a["diff3d"] = np.ones((len(a["xcoords"]), N, N), dtype=np.int16)
    a["diff3d"][11, 2, 3] = -5


def _zero(a):
    a["diff3d"][[1, 4, 6, 8, 10, 13, 17]] = 0.0


def _overflow(a):
    a["diff3d"] = a["diff3d"].astype(np.float64)
    a["diff3d"][14, 5, 5] = 1e300


def _length(a):
    a["xcoords"] = a["xcoords"][:-2]
    a["ycoords"] = a["ycoords"][:-2]


def _not_square(a):
    a["diff3d"] = a["diff3d"][:, :, :-1].copy()


def _two_d(a):
    a["diff3d"] = a["diff3d"][0]


def _complex(a):
    a["diff3d"] = a["diff3d"].astype(np.complex64)


def _no_patterns(a):
    a["diff3d"] = a["diff3d"][:0]


def _probe_shape(a):
    a["probeGuess"] = a["probeGuess"][:-1]


def _both_keys(a):
    a["diffraction"] = a["diff3d"]


def _missing(a):
    del a["probeGuess"]


def _positions_nan(a):
    a["xcoords"][2] = np.nan


def _fortran(a):
    a["diff3d"] = np.asfortranarray(a["diff3d"])
    a["diff3d"][2, 3, 3] = np.nan


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("mutate", [_nan, _negative, _negative_counts, _zero, _overflow, _length,
                                    _not_square, _two_d, _complex, _no_patterns, _probe_shape,
                                    _both_keys, _missing, _positions_nan, _fortran])
def test_malformed_files_give_the_eager_message(tmp_path, compressed, mutate):
    arrays = scan_arrays(19)
    mutate(arrays)
    path = write(tmp_path / "bad.npz", arrays, compressed)
    with pytest.raises(DataContractError) as eager:
        load_npz(path)
    with pytest.raises(DataContractError) as streamed:
        open_scan(path, chunk_bytes=CHUNK)
    assert str(streamed.value) == str(eager.value)
    message = str(streamed.value)
    assert str(path) in message
    assert any(f"'{key}'" in message for key in ("diff3d", "xcoords", "probeGuess"))


def test_zero_message_lists_first_indices_across_chunks(tmp_path):
    arrays = scan_arrays(19)
    _zero(arrays)
    with pytest.raises(DataContractError, match=r"7 of 19 patterns are all zero \(indices "
                                                r"1, 4, 6, 8, 10, \.\.\.\)"):
        open_scan(write(tmp_path / "z.npz", arrays), chunk_bytes=CHUNK)


@pytest.mark.parametrize("compressed", [False, True])
def test_corrupt_member_fails_its_crc(tmp_path, compressed):
    path = write(tmp_path / "crc.npz", scan_arrays(19), compressed)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("diff3d.npy")
    raw = bytearray(path.read_bytes())
    raw[info.header_offset + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(DataContractError) as eager:
        load_npz(path)
    with pytest.raises(DataContractError) as streamed:
        open_scan(path, chunk_bytes=CHUNK)
    assert str(streamed.value) == str(eager.value)
    assert "key 'diff3d': unreadable array (BadZipFile: Bad CRC-32" in str(streamed.value)


# ------------------------------------------------------------------------------------------
# streamed inference equals the eager computation
# ------------------------------------------------------------------------------------------

def eager_object(path, config):
    """The stitched object computed from fully loaded, fully grouped arrays."""
    m, d = config.model, config.data
    data = load_npz(path)
    grouped = prepare_grouped_arrays(data, m.gridsize, normalization_factor(data.diffraction),
                                     n_groups=d.n_groups, K=d.K, seed=d.seed)
    if data.object is not None:
        shape, origin = data.object.shape, (0, 0)
    else:
        shape, origin = canvas_for_positions(grouped.positions.reshape(-1, 2), N)
    weight = probe_weight(data.probe) if config.inference.stitch_weighting == "probe" else None
    stitcher = Stitcher(shape, N, crop=config.resolved_stitch_crop, origin=origin,
                        pixel_weight=weight)
    for sl in iter_grouped_batches(grouped, config.inference.batch_size):
        obj = predictor(grouped.X[sl], grouped.offsets[sl])
        stitcher.add(obj.reshape(-1, N, N), grouped.positions[sl].reshape(-1, 2))
    return stitcher.result(), grouped


@pytest.mark.parametrize("compressed, gridsize, with_object, n_groups", [
    (False, 1, False, None), (True, 1, True, None), (False, 2, False, 17), (True, 2, True, None),
])
def test_streamed_inference_equals_eager(tmp_path, compressed, gridsize, with_object, n_groups):
    path = write(tmp_path / "scan.npz", scan_arrays(41, seed=5, with_object=with_object),
                 compressed)
    config = config_for(path, tmp_path / "out", gridsize=gridsize, n_groups=n_groups)
    expected, grouped = eager_object(path, config)
    scan = prepare_scan(config)
    streamed = prepare_streamed_groups(scan.data, gridsize, scan.normalization_factor,
                                       n_groups=n_groups, K=6, seed=3)
    np.testing.assert_array_equal(streamed.nn_indices, grouped.nn_indices)
    np.testing.assert_array_equal(streamed.inputs(slice(2, 9)), grouped.X[2:9])
    result = stream_and_write(scan, predictor, config, prefix="np", title="streamed",
                              t_start=0.0, t_load=0.0, intensity_scale=1.0)
    assert result.origin == expected.origin
    assert np.max(np.abs(result.obj - expected.obj)) <= 1e-6
    np.testing.assert_array_equal(result.scanned_mask, expected.scanned_mask)
    with np.load(tmp_path / "out" / "reconstruction.npz") as z:
        assert {"object", "amplitude", "phase", "weight", "scanned_mask", "origin", "canvas_y",
                "canvas_x", "scan_index", "scan_positions", "stitch_crop"} <= set(z.files)
        np.testing.assert_array_equal(z["object"], result.obj)
        np.testing.assert_array_equal(z["scan_index"], np.unique(grouped.nn_indices))
    assert (result.metrics is not None) == with_object
    assert result.n_patterns == len(grouped) * gridsize ** 2
    assert scan.data.patterns._fh.closed


# ------------------------------------------------------------------------------------------
# memory: bounded by the batch and the canvas, not by the number of patterns
# ------------------------------------------------------------------------------------------

def _traced_peak(run) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streamed_peak_memory_does_not_grow_with_the_scan(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "DEFAULT_CHUNK_BYTES", 32 * N * N * 8)
    # Same canvas (positions in one fixed box); both sizes exceed the chunk of positions the
    # illumination mask is computed in, so only the scan length differs.
    small, large = 600, 2400
    paths = {M: write(tmp_path / f"scan_{M}.npz", scan_arrays(M, seed=M)) for M in (small, large)}

    def streamed(M):
        config = config_for(paths[M], tmp_path / f"out_{M}", batch_size=16)
        return lambda: stream_and_write(prepare_scan(config), predictor, config, prefix="np",
                                        title="memory", t_start=0.0, t_load=0.0,
                                        intensity_scale=1.0)

    def eager(M):
        config = config_for(paths[M], tmp_path / f"eager_{M}", batch_size=16)
        return lambda: eager_object(paths[M], config)

    streamed(small)()                          # warm-up: imports, matplotlib caches
    peak = {M: _traced_peak(streamed(M)) for M in (small, large)}
    assert peak[large] <= 1.5 * peak[small], peak
    # The sizes are meaningful: holding the scan in memory grows with it, streaming does not.
    eager_peak = {M: _traced_peak(eager(M)) for M in (small, large)}
    assert eager_peak[large] > 2.5 * eager_peak[small], eager_peak
    assert peak[large] - peak[small] < 0.1 * (eager_peak[large] - eager_peak[small]), \
        (peak, eager_peak)


# ------------------------------------------------------------------------------------------
# property: on any file the streamed and the eager loader agree
# ------------------------------------------------------------------------------------------

@settings(derandomize=True, max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hyp.npz_files(), st.booleans())
def test_streamed_and_eager_loaders_agree_on_any_file(item, compressed):
    with tempfile.TemporaryDirectory() as tmp:
        path = hyp.write_case(Path(tmp) / "scan.npz", item, compressed)
        try:
            eager = load_npz(path)
        except DataContractError as exc:
            with pytest.raises(DataContractError) as streamed:
                open_scan(path, chunk_bytes=16)
            assert str(streamed.value) == str(exc)
            return
        with open_scan(path, chunk_bytes=16) as scan:
            np.testing.assert_array_equal(scan.patterns.read(0, scan.M), eager.diffraction)
            for name in ("xcoords", "ycoords", "probe", "object", "scan_index",
                         "xcoords_start", "ycoords_start"):
                np.testing.assert_array_equal(getattr(scan, name), getattr(eager, name))
            assert scan.normalization_factor == pytest.approx(
                normalization_factor(eager.diffraction), rel=1e-12)
