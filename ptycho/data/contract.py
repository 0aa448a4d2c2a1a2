"""The data contract: one ptychographic scan per NPZ file, validated on the way in.

File keys (see ``docs/api_contract.md`` and the design notes, section 3):

=============================  ==================  ==================================================
key                            shape, dtype        meaning
=============================  ==================  ==================================================
``diff3d`` (or ``diffraction``) (M, N, N) float32   diffraction amplitude ``sqrt(counts)``, zero
                                                    frequency at pixel ``(N//2, N//2)``
``xcoords``, ``ycoords``       (M,) float64        scan positions in object pixels (patch centres)
``probeGuess``                 (N, N) complex64    probe estimate
``objectGuess`` (optional)     (H, W) complex64    ground truth / reference object
``scan_index`` (optional)      (M,) int64          scan id per pattern (default 0)
``xcoords_start``,             (M,) float64        nominal positions when ``xcoords`` are corrected
``ycoords_start`` (optional)
=============================  ==================  ==================================================

Accepted variations, converted on load: integer photon counts (any integer dtype; converted to
amplitude as ``sqrt`` in float64, so ``uint16`` data cannot overflow), the legacy ``(N, N, M)``
pattern layout, real-valued probes and objects (cast to complex64), and integral float scan ids.
Everything else that does not match raises :class:`DataContractError`, whose message names the
file, the key, what was expected and what was found. Keys outside the table are ignored.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DataContractError",
    "DataWarning",
    "PtychoData",
    "PatternValueSurvey",
    "legacy_layout_is_likelier",
    "npz_signature_problem",
    "validate_arrays",
    "load_npz",
    "save_npz",
    "warn_if_not_centred",
    "REQUIRED_KEYS",
    "OPTIONAL_KEYS",
]

DIFFRACTION_KEY = "diff3d"
DIFFRACTION_ALIAS = "diffraction"
REQUIRED_KEYS = (DIFFRACTION_KEY, "xcoords", "ycoords", "probeGuess")
OPTIONAL_KEYS = ("objectGuess", "scan_index", "xcoords_start", "ycoords_start")

_MAX_LISTED = 5          # how many offending indices a message lists
_POSITION_TOL = 1e-6     # object pixels of slack when checking that patches fit the object
MIN_SCAN_EXTENT_PX = 1.0  # distinct scan positions span at least this many object pixels


class DataWarning(UserWarning):
    """A scan that passes the contract but looks wrong (for instance uncentred patterns)."""


class DataContractError(ValueError):
    """A data file or array set does not follow the data contract.

    The message always names the source (file path or ``"<memory>"``), the key, the expected form
    and what was actually found.
    """


# --------------------------------------------------------------------------------------------
# small helpers that build messages
# --------------------------------------------------------------------------------------------

def _desc(arr: np.ndarray) -> str:
    return f"shape {tuple(arr.shape)} dtype {arr.dtype}"


def _list_indices(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:_MAX_LISTED])
    return shown + (", ..." if len(idx) > _MAX_LISTED else "")


def _fmt_index(index: tuple) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


class _Checker:
    """Raises :class:`DataContractError` with the source and key prefixed to the message."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> None:
        raise DataContractError(f"{self.source}: key '{key}': {message}")

    def as_array(self, key: str, value: Any) -> np.ndarray:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            self.fail(key, f"cannot be read as a NumPy array ({exc})")
        if arr.dtype.kind not in "biufc":
            self.fail(key, f"expected a numeric array, got {_desc(arr)} "
                           "(strings, objects and records are not allowed)")
        return arr

    def rank(self, key: str, arr: np.ndarray, ndim: int, expected: str) -> None:
        if arr.ndim != ndim:
            self.fail(key, f"expected {ndim}-D array {expected}, got {_desc(arr)}")

    def real(self, key: str, arr: np.ndarray, expected: str, allow_int: bool = True) -> None:
        kinds = "iuf" if allow_int else "f"
        if arr.dtype.kind not in kinds:
            self.fail(key, f"expected {expected}, got {_desc(arr)}")

    def finite(self, key: str, arr: np.ndarray, note: str = "") -> None:
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(np.argwhere(bad)[0])
            self.fail_nonfinite(key, int(bad.sum()), first, arr[first], _desc(arr), note)

    def fail_nonfinite(self, key: str, count: int, first: tuple, value: Any, desc: str,
                       note: str = "") -> None:
        """NaN/Inf message; ``first`` is the index of the first bad value, ``desc`` the array."""
        self.fail(key, f"contains {count} non-finite value(s) (NaN/Inf){note}; "
                       f"first at index {_fmt_index(first)} = {value}, {desc}")

    def non_negative(self, key: str, arr: np.ndarray, what: str) -> None:
        neg = arr < 0
        if neg.any():
            first = tuple(np.argwhere(neg)[0])
            self.fail_negative(key, what, int(neg.sum()), first, arr[first], _desc(arr))

    def fail_negative(self, key: str, what: str, count: int, first: tuple, value: Any,
                      desc: str) -> None:
        """Negative-value message; arguments as for :meth:`fail_nonfinite`."""
        self.fail(key, f"expected non-negative {what}, found {count} negative "
                       f"value(s); first at index {_fmt_index(first)} = {value}, {desc}")

    def fail_zero_patterns(self, key: str, zero: np.ndarray, count: int, M: int,
                           desc: str) -> None:
        """All-zero-pattern message; ``zero`` holds (at least the first six) of ``count``."""
        self.fail(key, f"{count} of {M} patterns are all zero (indices "
                       f"{_list_indices(zero)}); every pattern must hold some signal, {desc}")

    def length(self, key: str, arr: np.ndarray, M: int, against: str) -> None:
        if arr.shape[0] != M:
            self.fail(key, f"expected length M = {M} (number of patterns in '{against}'), "
                           f"got {_desc(arr)}")


# --------------------------------------------------------------------------------------------
# per-key conversions
# --------------------------------------------------------------------------------------------

def _positions(chk: _Checker, key: str, value: Any) -> np.ndarray:
    arr = chk.as_array(key, value)
    chk.rank(key, arr, 1, "(M,) of positions in object pixels")
    chk.real(key, arr, "(M,) real positions in object pixels (float64)")
    out = np.array(arr, dtype=np.float64)
    chk.finite(key, out)
    return out


def _check_scan_extent(chk: _Checker, xcoords: np.ndarray, ycoords: np.ndarray) -> None:
    """Refuse distinct positions that all lie within one object pixel.

    Positions are object pixels; a file that stores them in metres (for instance 1e-8) would
    otherwise stitch every pattern onto the same spot. Identical positions (one spot measured
    repeatedly) are accepted.
    """
    if len(xcoords) < 2:
        return
    extent = max(float(np.ptp(xcoords)), float(np.ptp(ycoords)))
    if extent == 0.0:
        warnings.warn(f"{chk.source}: all {len(xcoords)} scan positions are the same point "
                      f"(x {xcoords[0]:.6g}, y {ycoords[0]:.6g}); the patterns cannot overlap, "
                      "so the reconstruction is a single N x N patch — if the file's positions "
                      "were never filled in, store the real ones in 'xcoords' and 'ycoords'",
                      DataWarning, stacklevel=2)
    if 0.0 < extent < MIN_SCAN_EXTENT_PX:
        x_range = f"{xcoords.min():.6g}..{xcoords.max():.6g}"
        y_range = f"{ycoords.min():.6g}..{ycoords.max():.6g}"
        chk.fail("xcoords", f"all {len(xcoords)} scan positions lie within {extent:.3g} object "
                            f"pixels of each other (x range {x_range}, y range {y_range}); "
                            "positions must be in object pixels — if the file stores physical "
                            "units (m), divide 'xcoords' and 'ycoords' by the object pixel size")


def _complex_image(chk: _Checker, key: str, value: Any, expected: str) -> np.ndarray:
    arr = chk.as_array(key, value)
    chk.rank(key, arr, 2, expected)
    if arr.dtype.kind not in "iufc":
        chk.fail(key, f"expected {expected} complex64 (or real, which is cast), got {_desc(arr)}")
    chk.finite(key, arr)
    with np.errstate(over="ignore"):
        out = np.array(arr, dtype=np.complex64)
    chk.finite(key, out, note=" after conversion to complex64 (values too large)")
    return out


def _diffraction(chk: _Checker, key: str, value: Any, n_positions: int) -> np.ndarray:
    """Convert the pattern stack to (M, N, N) float32 amplitude."""
    arr = chk.as_array(key, value)
    expected = "(M, N, N) diffraction amplitude"
    if arr.dtype.kind in "bc":
        chk.fail(key, f"expected {expected} as real float (amplitude) or integer (counts), "
                      f"got {_desc(arr)}")
    chk.rank(key, arr, 3, expected)
    if (arr.shape[0] != n_positions and arr.shape[2] == n_positions
            and arr.shape[0] == arr.shape[1]):
        # Legacy layout (N, N, M): patterns along the last axis.
        arr = np.moveaxis(arr, 2, 0)
    elif (arr.shape[0] == arr.shape[1] == arr.shape[2] == n_positions
          and arr.dtype.kind in "iuf" and legacy_layout_is_likelier(arr)):
        warnings.warn(f"{chk.source}: key '{key}': shape {arr.shape} fits both the (M, N, N) "
                      "layout and the legacy (N, N, M) one; the patterns are centred only when "
                      "they lie along the last axis, so it is read as (N, N, M) — store "
                      "numpy.moveaxis(patterns, 2, 0) to make this explicit", DataWarning,
                      stacklevel=2)
        arr = np.moveaxis(arr, 2, 0)
    M, n_rows, n_cols = arr.shape
    if M == 0:
        chk.fail(key, f"contains no diffraction patterns (M = 0), {_desc(arr)}")
    if n_rows != n_cols:
        chk.fail(key, f"expected square N x N patterns, got {n_rows} x {n_cols} "
                      f"({_desc(arr)})")
    if n_rows == 0:
        chk.fail(key, f"expected patterns with N >= 1 pixels per side, got {_desc(arr)}")
    if M != n_positions:
        chk.fail(key, f"has M = {M} patterns but 'xcoords'/'ycoords' have {n_positions} "
                      f"positions ({_desc(arr)}); expected one position per pattern")
    survey = PatternValueSurvey(arr.dtype)
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "i":
            chk.non_negative(key, arr, "photon counts")
        # Counts -> amplitude in float64 first: squaring or rooting in the integer dtype overflows.
        out = np.sqrt(arr.astype(np.float64)).astype(np.float32)
    else:
        chk.finite(key, arr)
        chk.non_negative(key, arr, "amplitudes")
        with np.errstate(over="ignore"):
            out = np.array(arr, dtype=np.float32)
        chk.finite(key, out, note=" after conversion to float32 (values too large)")
    zero = np.flatnonzero(~out.reshape(M, -1).any(axis=1))
    if zero.size:
        chk.fail_zero_patterns(key, zero, int(zero.size), M, _desc(arr))
    survey.add(arr)
    survey.warn(chk.source, key)
    warn_if_not_centred(chk.source, key, np.einsum("mij,mij->ij", out, out, dtype=np.float64))
    return out


def _central_fraction(image: np.ndarray) -> float:
    """Share of ``image``'s sum inside its central N/2 x N/2 box (0 for an empty image)."""
    total = float(image.sum())
    q = image.shape[0] // 4
    return float(image[q:image.shape[0] - q, q:image.shape[1] - q].sum()) / total if total else 0.0


def legacy_layout_is_likelier(arr: np.ndarray) -> bool:
    """For a cube (M, M, M) with M positions, whether the legacy (N, N, M) reading fits better.

    Centred far-field patterns put most photons near the middle of the summed pattern. Summed
    over the right axis the stack shows that peak; summed over the wrong one it shows a stripe
    through the middle, half of which lies outside the central box.
    """
    if arr.dtype.kind in "iu":
        intensity = arr.astype(np.float64)
    else:
        intensity = np.square(arr, dtype=np.float64)
    legacy = _central_fraction(intensity.sum(axis=2))
    return legacy > _central_fraction(intensity.sum(axis=0)) + 0.15


class PatternValueSurvey:
    """Looks through the raw pattern values (chunk by chunk) for two silent mistakes and warns.

    * Integer counts equal to the largest value of their dtype (65535 for uint16, 2**32 - 1
      for uint32): detectors write it for saturated or masked pixels, and read as counts it
      dominates the normalisation and the likelihood.
    * Float patterns whose every value is a whole number above 1: intensities (counts) stored
      as float, where the contract expects amplitudes ``sqrt(counts)``.
    """

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.n_at_max = 0
        self.all_whole = self.dtype.kind == "f"
        self.peak = 0.0

    def add(self, raw: np.ndarray) -> None:
        if raw.size == 0:
            return
        if self.dtype.kind in "iu":
            self.n_at_max += int(np.count_nonzero(raw == np.iinfo(self.dtype).max))
        elif self.all_whole:
            with np.errstate(invalid="ignore"):
                self.all_whole = bool(np.all(raw == np.round(raw)))
            self.peak = max(self.peak, float(np.nanmax(raw)))

    def warn(self, source: str, key: str) -> None:
        if self.n_at_max:
            top = np.iinfo(self.dtype).max
            warnings.warn(f"{source}: key '{key}': {self.n_at_max} pixels hold {top}, the largest "
                          f"{self.dtype} value, which detectors write for saturated or masked "
                          "pixels; they are read as photon counts — set them to 0 (or "
                          "interpolate them) before training or inference", DataWarning,
                          stacklevel=3)
        if self.all_whole and self.peak > 1.0:
            warnings.warn(f"{source}: key '{key}': every value of the {self.dtype} patterns is a "
                          f"whole number (up to {self.peak:.6g}); these look like photon counts "
                          "stored as float, but float patterns are read as amplitudes "
                          "sqrt(counts) — store counts as an integer dtype or take the square "
                          "root", DataWarning, stacklevel=3)


def warn_if_not_centred(source: str, key: str, summed_intensity: np.ndarray) -> bool:
    """Warn (:class:`DataWarning`) when the patterns look uncentred; returns whether it warned.

    ``summed_intensity`` (N, N) is the sum over patterns of amplitude². A far-field pattern with
    its zero frequency at ``(N//2, N//2)`` has most of its photons in the central N/2 x N/2
    box; when the four N/4 x N/4 corner boxes (the same area) hold more than twice as many, the
    stack was most likely stored with the zero frequency at pixel (0, 0) (not ``fftshift``-ed).
    A central beamstop, or flat noise, does not trip this test.
    """
    total = float(np.sum(summed_intensity))
    N = summed_intensity.shape[-1]
    q = N // 4
    if total <= 0 or q == 0:
        return False
    centre = float(np.sum(summed_intensity[q:N - q, q:N - q]))
    corners = sum(float(np.sum(summed_intensity[r, c])) for r in (slice(0, q), slice(N - q, N))
                  for c in (slice(0, q), slice(N - q, N)))
    if corners <= 2.0 * centre:
        return False
    warnings.warn(f"{source}: key '{key}': the corners of the patterns hold more photons "
                  f"({corners / total:.0%}) than their centre ({centre / total:.0%}); the zero "
                  f"frequency must be at pixel ({N // 2}, {N // 2}) — if the patterns were "
                  "stored unshifted, apply numpy.fft.fftshift over the last two axes",
                  DataWarning, stacklevel=2)
    return True


def _scan_index(chk: _Checker, key: str, value: Any, M: int) -> np.ndarray:
    arr = chk.as_array(key, value)
    chk.rank(key, arr, 1, "(M,) of integer scan ids")
    chk.length(key, arr, M, DIFFRACTION_KEY)
    if arr.dtype.kind == "f":
        chk.finite(key, arr)
        frac = arr != np.round(arr)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            chk.fail(key, f"expected integer scan ids (int64), found non-integer value "
                          f"{arr[i]} at index {i}, {_desc(arr)}")
    elif arr.dtype.kind not in "iu":
        chk.fail(key, f"expected (M,) int64 scan ids, got {_desc(arr)}")
    if arr.size and arr.dtype.kind in "uf":
        info = np.iinfo(np.int64)
        if arr.max() > info.max or arr.min() < info.min:
            chk.fail(key, f"scan ids out of int64 range (min {arr.min()}, max {arr.max()})")
    return np.array(arr, dtype=np.int64)


def _check_object_covers(chk: _Checker, obj: np.ndarray, y: np.ndarray, x: np.ndarray,
                         N: int) -> None:
    """Every N x N patch must lie inside the object: rows ``y - N//2 ... y - N//2 + N - 1``."""
    H, W = obj.shape
    top = y - N // 2
    left = x - N // 2
    excess = np.max(np.stack([-top, top + N - 1 - (H - 1), -left, left + N - 1 - (W - 1)]),
                    axis=0)
    outside = excess > _POSITION_TOL
    if outside.any():
        i = int(np.argmax(excess))
        chk.fail("objectGuess", (
            f"object of shape ({H}, {W}) is too small for the scan: {int(outside.sum())} of "
            f"{len(y)} patches (N = {N}) extend outside it; worst is pattern {i} at "
            f"(y, x) = ({y[i]:g}, {x[i]:g}), covering rows {top[i]:g}..{top[i] + N - 1:g} and "
            f"cols {left[i]:g}..{left[i] + N - 1:g}, expected within rows 0..{H - 1} and "
            f"cols 0..{W - 1}; positions are patch centres in objectGuess pixels — if "
            "objectGuess is a reference in another frame, leave it out of the file to "
            "reconstruct without ground truth"))


def _validate(arrays: Mapping[str, Any], source: str,
              present_keys: list[str] | None = None,
              diffraction_reader: Callable[[_Checker, str, Any, int], Any] | None = None
              ) -> dict[str, Any]:
    """Check and canonicalise file-keyed arrays; returns the :class:`PtychoData` field values.

    ``present_keys`` lists every key of the originating file for error messages (defaults to the
    keys of ``arrays``). ``diffraction_reader(chk, key, value, n_positions)`` replaces the eager
    pattern conversion (``ptycho.data.stream`` validates chunk by chunk); it returns anything
    with an ``(M, N, N)`` ``shape``.
    """
    chk = _Checker(source)
    if not isinstance(arrays, Mapping):
        raise DataContractError(f"{source}: expected a mapping of key -> array, "
                                f"got {type(arrays).__name__}")
    present = sorted(str(k) for k in (arrays.keys() if present_keys is None else present_keys))
    if DIFFRACTION_KEY in arrays and DIFFRACTION_ALIAS in arrays:
        raise DataContractError(
            f"{source}: both '{DIFFRACTION_KEY}' and its alias '{DIFFRACTION_ALIAS}' are present; "
            "expected exactly one diffraction array")
    diff_key = DIFFRACTION_ALIAS if DIFFRACTION_ALIAS in arrays else DIFFRACTION_KEY
    missing = [k for k in (diff_key,) + REQUIRED_KEYS[1:] if k not in arrays]
    if missing:
        names = [f"'{DIFFRACTION_KEY}' (or '{DIFFRACTION_ALIAS}')" if k == DIFFRACTION_KEY
                 else f"'{k}'" for k in missing]
        raise DataContractError(
            f"{source}: missing required key(s) {', '.join(names)}; keys present: "
            f"{present if present else 'none'}")

    xcoords = _positions(chk, "xcoords", arrays["xcoords"])
    ycoords = _positions(chk, "ycoords", arrays["ycoords"])
    if len(xcoords) != len(ycoords):
        chk.fail("ycoords", f"expected the same length as 'xcoords' ({len(xcoords)}), "
                            f"got {_desc(ycoords)}")
    _check_scan_extent(chk, xcoords, ycoords)
    read = _diffraction if diffraction_reader is None else diffraction_reader
    diffraction = read(chk, diff_key, arrays[diff_key], len(xcoords))
    M, N = diffraction.shape[0], diffraction.shape[1]

    probe = _complex_image(chk, "probeGuess", arrays["probeGuess"], "(N, N) probe")
    if probe.shape != (N, N):
        chk.fail("probeGuess", f"expected shape (N, N) = ({N}, {N}) to match the patterns "
                               f"in '{diff_key}', got {_desc(probe)}")
    if not np.any(probe):
        chk.fail("probeGuess", f"is all zero; expected a probe with some intensity, "
                               f"{_desc(probe)}")

    obj = None
    if arrays.get("objectGuess") is not None:
        obj = _complex_image(chk, "objectGuess", arrays["objectGuess"], "(H, W) object")
        if obj.size == 0:
            chk.fail("objectGuess", f"expected a non-empty (H, W) object, got {_desc(obj)}")
        _check_object_covers(chk, obj, ycoords, xcoords, N)

    if arrays.get("scan_index") is not None:
        scan_index = _scan_index(chk, "scan_index", arrays["scan_index"], M)
    else:
        scan_index = np.zeros(M, dtype=np.int64)

    has_x0 = arrays.get("xcoords_start") is not None
    has_y0 = arrays.get("ycoords_start") is not None
    if has_x0 != has_y0:
        given, absent = (("xcoords_start", "ycoords_start") if has_x0
                         else ("ycoords_start", "xcoords_start"))
        chk.fail(absent, f"'{given}' is present but '{absent}' is missing; expected both or "
                         f"neither; keys present: {present}")
    x0 = y0 = None
    if has_x0:
        x0 = _positions(chk, "xcoords_start", arrays["xcoords_start"])
        chk.length("xcoords_start", x0, M, diff_key)
        y0 = _positions(chk, "ycoords_start", arrays["ycoords_start"])
        chk.length("ycoords_start", y0, M, diff_key)

    out = dict(diffraction=diffraction, xcoords=xcoords, ycoords=ycoords, probe=probe,
               object=obj, scan_index=scan_index, xcoords_start=x0, ycoords_start=y0)
    for value in out.values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    out["source"] = str(source)
    return out


# --------------------------------------------------------------------------------------------
# the container
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PtychoData:
    """One validated ptychographic scan.

    Attributes:
        diffraction: (M, N, N) float32 diffraction amplitude ``sqrt(counts)``, zero frequency at
            pixel ``(N//2, N//2)``.
        xcoords, ycoords: (M,) float64 scan positions (patch centres) in object pixels; ``x`` is
            the column, ``y`` the row.
        probe: (N, N) complex64 probe estimate (file key ``probeGuess``).
        object: (H, W) complex64 reference object (``objectGuess``) or ``None``. When present
            every N x N patch at the scan positions lies inside it.
        scan_index: (M,) int64 scan id per pattern (zeros when the file has none).
        xcoords_start, ycoords_start: (M,) float64 nominal positions, or ``None``.
        source: where the data came from (a file path, or ``"<memory>"``).

    Construction validates and canonicalises (dtype casts, counts to amplitude, legacy layout)
    exactly like :func:`validate_arrays`; invalid input raises :class:`DataContractError`.
    The stored arrays are read-only copies.
    """

    diffraction: np.ndarray
    xcoords: np.ndarray
    ycoords: np.ndarray
    probe: np.ndarray
    object: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    xcoords_start: np.ndarray | None = None
    ycoords_start: np.ndarray | None = None
    source: str = "<memory>"

    def __post_init__(self) -> None:
        canonical = _validate(self.to_arrays(), self.source)
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    @classmethod
    def _from_validated(cls, values: dict[str, Any]) -> "PtychoData":
        """Build from output of ``_validate`` without checking it a second time."""
        obj = object.__new__(cls)
        for f in fields(cls):
            object.__setattr__(obj, f.name, values[f.name])
        return obj

    @property
    def M(self) -> int:
        """Number of diffraction patterns."""
        return int(self.diffraction.shape[0])

    @property
    def N(self) -> int:
        """Pattern side length in pixels."""
        return int(self.diffraction.shape[1])

    @property
    def positions(self) -> np.ndarray:
        """(M, 2) float64 scan positions as (y, x) rows, object pixels."""
        return np.stack([self.ycoords, self.xcoords], axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The data under its file keys (``diff3d``, ``probeGuess``, ...); ``None`` entries omitted."""
        arrays = {
            DIFFRACTION_KEY: self.diffraction,
            "xcoords": self.xcoords,
            "ycoords": self.ycoords,
            "probeGuess": self.probe,
            "objectGuess": self.object,
            "scan_index": self.scan_index,
            "xcoords_start": self.xcoords_start,
            "ycoords_start": self.ycoords_start,
        }
        return {k: v for k, v in arrays.items() if v is not None}

    def select(self, indices: Any) -> "PtychoData":
        """A new scan holding only the patterns ``indices`` (int array, slice or boolean mask).

        Probe, object and source are shared. Used for train/validation splits.
        """
        idx = np.arange(self.M)[indices]
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise DataContractError(f"{self.source}: selection {indices!r} holds no patterns")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("diffraction", "xcoords", "ycoords", "scan_index",
                     "xcoords_start", "ycoords_start"):
            if values[name] is not None:
                part = values[name][idx].copy()
                part.setflags(write=False)
                values[name] = part
        return PtychoData._from_validated(values)


def validate_arrays(arrays: Mapping[str, Any], source: str = "<memory>") -> PtychoData:
    """Validate a mapping of file keys to arrays and return a :class:`PtychoData`.

    Args:
        arrays: keys as in the table of this module (``diffraction`` accepted for ``diff3d``;
            other keys are ignored).
        source: name used in error messages (the file path when loading).

    Raises:
        DataContractError: for any departure from the contract; the message names ``source``,
            the key, the expected and the actual shape/dtype/value.
    """
    return PtychoData._from_validated(_validate(arrays, source))


def npz_signature_problem(head: bytes) -> str:
    """Why a file starting with ``head`` cannot be an NPZ archive ("" if it may be one).

    Checked before ``np.load``, which takes any other content for a pickle and says so.
    """
    if not head:
        return "not an NPZ archive: the file is empty (0 bytes)"
    if head.startswith(b"PK") or head.startswith(b"\x93NUMPY"):
        return ""
    return ("not an NPZ archive (an NPZ file is a zip archive and starts with b'PK'; this one "
            f"starts with {head[:6]!r})")


def _read_npz(source: str, wanted: set[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """All key names of the archive at ``source`` and the arrays of the ``wanted`` keys."""
    path = Path(source)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataContractError(f"{source}: cannot read data file: path {what}")
    arrays: dict[str, np.ndarray] = {}
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataContractError(f"{source}: cannot read data file ({type(exc).__name__}: "
                                f"{exc})") from exc
    # The handle is ours, so it is closed even when NumPy fails half-way through parsing.
    with fh:
        problem = npz_signature_problem(fh.read(6))
        fh.seek(0)
        if problem:
            raise DataContractError(f"{source}: {problem}")
        try:
            loaded = np.load(fh, allow_pickle=False)
        except Exception as exc:  # NumPy's reader raises many types for a non-NPZ file
            raise DataContractError(f"{source}: not a readable NPZ archive "
                                    f"({type(exc).__name__}: {exc})") from exc
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataContractError(f"{source}: expected an NPZ archive of named arrays, got a "
                                    f"single .npy array ({_desc(np.asarray(loaded))})")
        with loaded:
            keys = list(loaded.files)
            for key in keys:
                if key not in wanted:
                    continue
                try:
                    arrays[key] = loaded[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc):
                        raise DataContractError(
                            f"{source}: key '{key}': holds a Python object array, which would "
                            "need unpickling; expected a numeric array") from exc
                    raise DataContractError(f"{source}: key '{key}': unreadable array "
                                            f"(ValueError: {exc})") from exc
                except Exception as exc:  # corrupt member: zlib, zipfile, EOF, OS errors
                    raise DataContractError(f"{source}: key '{key}': unreadable array "
                                            f"({type(exc).__name__}: {exc})") from exc
    return keys, arrays


def load_npz(path: str | os.PathLike) -> PtychoData:
    """Read and validate one scan from an ``.npz`` file (never unpickles).

    Only the contract's keys are read; other keys are listed in messages but not loaded.

    Raises:
        DataContractError: when the file is missing, not an NPZ archive, unreadable, holds object
            arrays, or does not follow the contract.
    """
    source = os.fspath(path)
    wanted = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS) | {DIFFRACTION_ALIAS}
    keys, arrays = _read_npz(source, wanted)
    return PtychoData._from_validated(_validate(arrays, source, present_keys=keys))


def save_npz(path: str | os.PathLike, data: PtychoData, *, compressed: bool = False) -> Path:
    """Write ``data`` under its canonical keys to ``path`` atomically; returns the path.

    The file holds ``diff3d`` (amplitude, float32), ``xcoords``, ``ycoords``, ``probeGuess``,
    ``scan_index`` and, when present, ``objectGuess``, ``xcoords_start``, ``ycoords_start``.
    """
    from ptycho.atomic import atomic_save_npz

    if not isinstance(data, PtychoData):
        raise TypeError(f"save_npz expects a PtychoData, got {type(data).__name__}")
    return atomic_save_npz(path, data.to_arrays(), compressed=compressed)
