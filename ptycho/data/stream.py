"""A validated scan whose diffraction patterns stay on disk.

:func:`open_scan` checks an ``.npz`` file against the data contract like
:func:`ptycho.data.contract.load_npz` (same keys, conversions and :class:`DataContractError`
messages) but reads the pattern stack chunk by chunk through a :mod:`ptycho.data.lazy` source,
so its memory does not grow with the number of patterns M. Only the small per-pattern arrays
(positions, scan ids: O(M) floats), the probe and the object are held in memory. The validating
pass also records each pattern's photon sum, which gives the normalisation factor without a
second pass over the file.

Files with the legacy ``(N, N, M)`` layout, Fortran-ordered or otherwise unusual pattern arrays,
and files that fail a shape check are read eagerly (whole stack in memory) and validated by the
eager code; such layouts are rare.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import numpy as np

from ptycho.data.contract import (DIFFRACTION_ALIAS, DIFFRACTION_KEY, OPTIONAL_KEYS,
                                  REQUIRED_KEYS, PatternValueSurvey, _Checker, _desc,
                                  _diffraction, _read_npz, _validate, warn_if_not_centred)
from ptycho.data.lazy import ArrayPatterns, PatternFile, open_pattern_member, to_amplitude

__all__ = ["StreamedScan", "open_scan", "pattern_photons", "normalization_factor",
           "chunk_patterns", "DEFAULT_CHUNK_BYTES"]

PatternSource = Union[PatternFile, ArrayPatterns]

DEFAULT_CHUNK_BYTES = 8 << 20
"""Float64 working bytes per chunk while validating (N = 64: 256 patterns)."""


def chunk_patterns(N: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Patterns per chunk so that one float64 copy of a chunk takes about ``chunk_bytes``."""
    return max(1, int(chunk_bytes) // (int(N) * int(N) * 8))


def _photons(amplitude: np.ndarray) -> np.ndarray:
    """(B,) float64 ``sum_pixels amplitude**2`` of (B, N, N) patterns."""
    a = amplitude.astype(np.float64)
    return np.sum(a * a, axis=(-2, -1))


def pattern_photons(patterns: PatternSource, chunk_bytes: int = DEFAULT_CHUNK_BYTES
                    ) -> np.ndarray:
    """(M,) float64 photon sum of every pattern, read chunk by chunk."""
    out = np.empty(patterns.M, dtype=np.float64)
    for start, raw in patterns.raw_chunks(chunk_patterns(patterns.N, chunk_bytes)):
        out[start:start + len(raw)] = _photons(to_amplitude(raw))
    return out


def _factor(photons: np.ndarray, N: int) -> float:
    """``ptycho.physics.normalization_factor`` from per-pattern photon sums."""
    mp = float(np.mean(photons))
    if mp <= 0:
        raise ValueError("amplitudes are all zero; the normalisation factor is undefined")
    return float(np.sqrt(mp) / (N / 2.0))


def normalization_factor(patterns: PatternSource,
                         chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> float:
    """``sqrt(mean_photons) / (N / 2)`` of a pattern source, equal (to float rounding) to
    ``ptycho.physics.normalization_factor`` of the whole float32 amplitude stack."""
    return _factor(pattern_photons(patterns, chunk_bytes), patterns.N)


@dataclass(frozen=True, eq=False)
class StreamedScan:
    """A validated scan (see :class:`ptycho.data.contract.PtychoData`) with lazy patterns.

    Attributes:
        patterns: the (M, N, N) pattern source; ``read``/``gather`` give float32 amplitude.
        photons: (M,) float64 ``sum_pixels amplitude**2`` per pattern.
        xcoords, ycoords, probe, object, scan_index, xcoords_start, ycoords_start, source: as in
            ``PtychoData`` (read-only arrays).
    """

    patterns: PatternSource
    photons: np.ndarray
    xcoords: np.ndarray
    ycoords: np.ndarray
    probe: np.ndarray
    object: np.ndarray | None
    scan_index: np.ndarray
    xcoords_start: np.ndarray | None
    ycoords_start: np.ndarray | None
    source: str

    @property
    def M(self) -> int:
        """Number of diffraction patterns."""
        return self.patterns.M

    @property
    def N(self) -> int:
        """Pattern side length in pixels."""
        return self.patterns.N

    @property
    def positions(self) -> np.ndarray:
        """(M, 2) float64 scan positions as (y, x) rows, object pixels."""
        return np.stack([self.ycoords, self.xcoords], axis=1)

    @property
    def normalization_factor(self) -> float:
        """The scan's input normalisation factor (``ptycho.physics.normalization_factor``)."""
        return _factor(self.photons, self.N)

    def close(self) -> None:
        """Close the pattern file (and remove its temporary copy); other arrays stay usable."""
        self.patterns.close()

    def __enter__(self) -> "StreamedScan":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FirstHit:
    """Count of flagged values over all chunks and the first one in C order."""

    def __init__(self) -> None:
        self.count, self.first, self.value = 0, None, None

    def add(self, mask: np.ndarray, arr: np.ndarray, start: int) -> None:
        n = int(np.count_nonzero(mask))
        if n and self.first is None:
            local = tuple(np.argwhere(mask)[0])
            self.first = (start + int(local[0]),) + tuple(int(i) for i in local[1:])
            self.value = arr[local]
        self.count += n


class _Described:
    """Shape and dtype, for the ``shape ... dtype ...`` part of contract messages."""

    def __init__(self, shape: tuple, dtype: np.dtype) -> None:
        self.shape, self.dtype = shape, np.dtype(dtype)


def _check_patterns(chk: _Checker, key: str, patterns: PatternFile,
                    chunk_bytes: int) -> np.ndarray:
    """Validate the values of a well-shaped pattern file in one pass; returns the photon sums.

    Same checks and messages as the eager conversion, in the same order: NaN/Inf, negative
    values, float32 overflow, all-zero patterns.
    """
    kind, M = patterns.dtype.kind, patterns.M
    nonfinite, negative, overflow = _FirstHit(), _FirstHit(), _FirstHit()
    survey = PatternValueSurvey(patterns.dtype)
    zero_count, zero_first = 0, []
    photons = np.empty(M, dtype=np.float64)
    summed = np.zeros((patterns.N, patterns.N), dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        for start, raw in patterns.raw_chunks(chunk_patterns(patterns.N, chunk_bytes)):
            if kind == "f":
                nonfinite.add(~np.isfinite(raw), raw, start)
            if kind in "if":
                negative.add(raw < 0, raw, start)
            amp = to_amplitude(raw)
            if kind == "f" and amp is not raw:
                overflow.add(~np.isfinite(amp), amp, start)
            zero = np.flatnonzero(~amp.reshape(len(amp), -1).any(axis=1))
            zero_count += int(zero.size)
            zero_first.extend((zero[:6 - len(zero_first)] + start).tolist())
            survey.add(raw)
            photons[start:start + len(amp)] = _photons(amp)
            summed += np.einsum("mij,mij->ij", amp, amp, dtype=np.float64)
    desc = _desc(patterns)
    if nonfinite.count:
        chk.fail_nonfinite(key, nonfinite.count, nonfinite.first, nonfinite.value, desc)
    if negative.count:
        chk.fail_negative(key, "photon counts" if kind == "i" else "amplitudes",
                          negative.count, negative.first, negative.value, desc)
    if overflow.count:
        chk.fail_nonfinite(key, overflow.count, overflow.first, overflow.value,
                           _desc(_Described(patterns.shape, np.float32)),
                           note=" after conversion to float32 (values too large)")
    if zero_count:
        chk.fail_zero_patterns(key, np.asarray(zero_first), zero_count, M, desc)
    survey.warn(chk.source, key)
    warn_if_not_centred(chk.source, key, summed)
    return photons


def open_scan(path: str | os.PathLike, *, chunk_bytes: int | None = None) -> StreamedScan:
    """Open and validate one scan without loading its patterns; close it when done.

    ``chunk_bytes`` (default :data:`DEFAULT_CHUNK_BYTES`) bounds the working memory of the
    validating pass.

    Raises:
        DataContractError: as :func:`ptycho.data.contract.load_npz`, with its messages.
    """
    source = os.fspath(path)
    chunk_bytes = DEFAULT_CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)
    small = (set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)) - {DIFFRACTION_KEY}
    keys, arrays = _read_npz(source, small)
    opened: list = []
    photons: dict[str, np.ndarray] = {}

    def read(chk: _Checker, key: str, value, n_positions: int):
        if isinstance(value, PatternFile):
            M, rows, cols = value.shape
            # A cube (M, M, M) may be the legacy layout: the eager reader decides.
            if M == n_positions and M > 0 and rows == cols and rows > 0 and M != rows:
                photons["value"] = _check_patterns(chk, key, value, chunk_bytes)
                return value
            value.close()
            value = _read_npz(source, {key})[1][key]
        patterns = ArrayPatterns(_diffraction(chk, key, value, n_positions))
        photons["value"] = pattern_photons(patterns, chunk_bytes)
        return patterns

    try:
        for key in (DIFFRACTION_KEY, DIFFRACTION_ALIAS):
            if key in keys:
                member = open_pattern_member(source, key)
                if member is None:
                    arrays[key] = _read_npz(source, {key})[1][key]
                else:
                    opened.append(member)
                    arrays[key] = member
        values = _validate(arrays, source, present_keys=keys, diffraction_reader=read)
    except BaseException:
        for member in opened:
            member.close()
        raise
    patterns = values.pop("diffraction")
    values["photons"] = photons["value"]
    values["photons"].setflags(write=False)
    return StreamedScan(patterns=patterns, **values)
