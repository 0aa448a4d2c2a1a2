"""Property: for any file, ``load_npz`` returns a valid PtychoData or raises DataContractError.

Random NPZ files are built from a valid scan by dropping keys, replacing arrays with random
shapes and dtypes (integers, uint16, bools, complex, object and string arrays), and injecting
NaN, Inf, negative values and empty arrays; some files are not NPZ archives at all. Any other
exception type (IndexError, TypeError, ZeroDivisionError, ...) is a bug in the loader.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptycho.data.contract import DataContractError, PtychoData, load_npz

KEYS = ["diff3d", "xcoords", "ycoords", "probeGuess", "objectGuess",
        "scan_index", "xcoords_start", "ycoords_start", "extra"]
DTYPES = ["float32", "float64", "float16", "int8", "int32", "int64", "uint8", "uint16",
          "bool", "complex64", "complex128", "object", "str"]
ACTIONS = ["keep"] * 12 + ["drop", "random", "nan", "inf", "negative", "empty", "transpose"]


def base_arrays(M: int, N: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    H = N + 8
    return {
        "diff3d": (rng.random((M, N, N)) + 0.1).astype(np.float32),
        "xcoords": rng.uniform(N / 2, H - N / 2, M),
        "ycoords": rng.uniform(N / 2, H - N / 2, M),
        "probeGuess": (rng.random((N, N)) + 1j).astype(np.complex64),
        "objectGuess": np.ones((H, H), np.complex64),
        "scan_index": np.zeros(M, np.int64),
        "xcoords_start": np.full(M, H / 2),
        "ycoords_start": np.full(M, H / 2),
    }


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    values = rng.normal(0.0, 50.0, size=shape)
    if dtype == "object":
        return np.array([None, "x", 1.5][: max(1, int(np.prod(shape)) % 3 + 1)], dtype=object)
    if dtype == "str":
        return values.astype(str)
    if dtype == "bool":
        return values > 0
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return np.clip(np.round(values), info.min, info.max).astype(dtype)
    if dtype.startswith("complex"):
        return (values + 1j * rng.normal(size=shape)).astype(dtype)
    return values.astype(dtype)


def corrupt(arr: np.ndarray, action: str, rng: np.random.Generator) -> np.ndarray:
    if action == "empty":
        return arr[:0] if arr.ndim else np.zeros(0)
    if action == "transpose":
        return np.ascontiguousarray(arr.T)
    out = arr.astype(np.float64) if arr.dtype.kind in "biu" else arr.copy()
    if out.size == 0:
        return out
    flat = out.reshape(-1)
    i = int(rng.integers(flat.size))
    if action == "nan":
        flat[i] = np.nan
    elif action == "inf":
        flat[i] = -np.inf
    elif action == "negative":
        flat[i] = -abs(flat[i]) - 1.0
    return out


@st.composite
def npz_files(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.integers(0, 9)) == 0:
        return ("bytes", rng.bytes(int(rng.integers(0, 64))))
    M = draw(st.integers(1, 5))
    N = draw(st.integers(1, 6))
    arrays = base_arrays(M, N, rng)
    plan = {}
    for key in KEYS:
        action = draw(st.sampled_from(ACTIONS))
        if action == "random" or (action != "drop" and key not in arrays):
            ndim = draw(st.integers(0, 3))
            shape = tuple(draw(st.lists(st.sampled_from([0, 1, M, N, 2, 3]),
                                        min_size=ndim, max_size=ndim)))
            plan[key] = random_array(rng, shape, draw(st.sampled_from(DTYPES)))
        elif action != "drop" and action != "keep":
            plan[key] = corrupt(arrays[key], action, rng)
        elif action == "keep":
            plan[key] = arrays[key]
    diff = plan.get("diff3d")
    if diff is not None and diff.dtype.kind in "biufc" and draw(st.booleans()):
        # the same patterns as integer photon counts
        dtype = np.dtype(draw(st.sampled_from(["uint8", "uint16", "int32", "uint64"])))
        counts = np.nan_to_num(np.round(np.abs(diff.real.astype(np.float64)) * 100),
                               posinf=0.0, neginf=0.0)
        plan["diff3d"] = np.clip(counts, 0, np.iinfo(dtype).max).astype(dtype)
    alias = draw(st.integers(0, 7))
    if "diff3d" in plan and alias == 0:
        plan["diffraction"] = plan["diff3d"]            # both keys: ambiguous, refused
    elif "diff3d" in plan and alias <= 2:
        plan["diffraction"] = plan.pop("diff3d")
    return ("npz", plan)


def check_valid(data: PtychoData) -> None:
    M, N = data.M, data.N
    assert M >= 1 and N >= 1
    assert data.diffraction.dtype == np.float32 and data.diffraction.shape == (M, N, N)
    assert np.isfinite(data.diffraction).all() and (data.diffraction >= 0).all()
    assert data.diffraction.reshape(M, -1).any(axis=1).all()
    for name in ("xcoords", "ycoords"):
        arr = getattr(data, name)
        assert arr.dtype == np.float64 and arr.shape == (M,) and np.isfinite(arr).all()
    assert data.probe.dtype == np.complex64 and data.probe.shape == (N, N)
    assert np.isfinite(data.probe).all()
    assert data.scan_index.dtype == np.int64 and data.scan_index.shape == (M,)
    if data.object is not None:
        assert data.object.dtype == np.complex64 and data.object.ndim == 2
        assert np.isfinite(data.object).all()
    assert (data.xcoords_start is None) == (data.ycoords_start is None)


def write_case(path, item, compressed=False):
    """Write one ``npz_files()`` example (raw bytes or a dict of arrays) to ``path``."""
    kind, payload = item
    if kind == "bytes":
        path.write_bytes(payload)
    else:
        (np.savez_compressed if compressed else np.savez)(path, **payload)
    return path


@settings(derandomize=True, max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(npz_files())
def test_loader_returns_valid_data_or_contract_error(item):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_case(Path(tmp) / "scan.npz", item)
        try:
            data = load_npz(path)
        except DataContractError as exc:
            assert str(path) in str(exc)
            return
        check_valid(data)


def test_generator_produces_both_outcomes():
    """The strategy must exercise both the accepting and the refusing path."""
    outcomes = set()

    @settings(derandomize=True, max_examples=60, deadline=None, database=None)
    @given(npz_files())
    def collect(item):
        kind, payload = item
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "scan.npz"
            if kind == "bytes":
                path.write_bytes(payload)
            else:
                np.savez(path, **payload)
            try:
                load_npz(path)
                outcomes.add("valid")
            except DataContractError:
                outcomes.add("error")

    collect()
    assert outcomes == {"valid", "error"}
