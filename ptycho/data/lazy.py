"""Diffraction patterns read from disk on demand, a range or a batch at a time.

A pattern source holds an ``(M, N, N)`` stack without loading it: :meth:`PatternFile.read`
returns patterns ``start:stop`` and :meth:`PatternFile.gather` any set of patterns, always as
float32 amplitude (float data are cast; integer photon counts become ``sqrt(counts)`` computed in
float64, so ``uint16`` cannot overflow). Resident memory is the requested patterns, whatever M is.

How an ``.npz`` member is read (:func:`open_pattern_member`):

* stored members (``np.savez``) are read in place: the ``.npy`` header inside the zip member is
  parsed and patterns are fetched with positioned reads (``readinto``; no memory map, so the
  page cache is never counted as this process's memory);
* deflated members (``np.savez_compressed``) are inflated once, block by block, into a
  temporary ``.npy`` file (``tempfile`` directory, removed by :meth:`PatternFile.close`, at
  garbage collection or at exit) and read from there.

Anything else (Fortran order, ``.npy`` format 3, non-numeric dtypes, unreadable headers) is left
to the eager reader: :func:`open_pattern_member` returns ``None`` for it. :class:`ArrayPatterns`
offers the same interface over an array already in memory.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
import shutil
import struct
import tempfile
import weakref
import zipfile
import zlib
from collections.abc import Iterator
from typing import Optional

import numpy as np

from ptycho.data.contract import DataContractError

__all__ = ["PatternFile", "ArrayPatterns", "open_pattern_member", "to_amplitude"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")      # signature ... name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"
_COPY_BLOCK = 1 << 22                           # bytes per block when inflating a member


def to_amplitude(raw: np.ndarray) -> np.ndarray:
    """Float32 amplitude of raw file patterns: integer counts -> ``sqrt`` in float64, floats cast."""
    if raw.dtype.kind in "iu":
        return np.sqrt(raw.astype(np.float64)).astype(np.float32)
    with np.errstate(over="ignore"):
        return raw.astype(np.float32, copy=False)


def _runs(sorted_unique: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """``(position, first, stop)`` of each run of consecutive values in a sorted unique array."""
    if sorted_unique.size == 0:
        return
    breaks = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [sorted_unique.size]])
    for s, e in zip(starts.tolist(), ends.tolist()):
        yield s, int(sorted_unique[s]), int(sorted_unique[e - 1]) + 1


class _Source(ABC):
    """Shared reading logic; subclasses provide ``_read_raw(start, stop)``."""

    shape: tuple[int, int, int]
    dtype: np.dtype

    @property
    def M(self) -> int:
        """Number of patterns."""
        return int(self.shape[0])

    @property
    def N(self) -> int:
        """Pattern side length in pixels."""
        return int(self.shape[1])

    @abstractmethod
    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        """Patterns ``start:stop`` in the stored dtype, ``(stop - start, N, N)``."""

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.M:
            raise IndexError(f"pattern range {start}:{stop} outside 0:{self.M}")

    def _check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.M):
            raise IndexError(f"pattern indices must lie in 0..{self.M - 1}, got "
                             f"{idx.min()}..{idx.max()}")
        return idx

    def raw_chunks(self, chunk_patterns: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, raw)`` for consecutive chunks of at most ``chunk_patterns`` patterns in the
        stored dtype, covering all M patterns in order."""
        step = max(1, int(chunk_patterns))
        for start in range(0, self.M, step):
            yield start, self._read_raw(start, min(start + step, self.M))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Patterns ``start:stop`` as ``(stop - start, N, N)`` float32 amplitude."""
        self._check_range(start, stop)
        return to_amplitude(self._read_raw(start, stop))

    def gather(self, indices) -> np.ndarray:
        """Patterns ``indices`` (any int array shape S) as ``S + (N, N)`` float32 amplitude.

        Each distinct pattern is read once, in ascending order, one read per run of consecutive
        indices.
        """
        idx = self._check_indices(indices)
        uniq, inverse = np.unique(idx.ravel(), return_inverse=True)
        out = np.empty((uniq.size, self.N, self.N), dtype=np.float32)
        for pos, first, stop in _runs(uniq):
            out[pos:pos + stop - first] = self.read(first, stop)
        return out[inverse.reshape(idx.shape)]

    def close(self) -> None:
        """Release files; the source cannot be read afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArrayPatterns(_Source):
    """The pattern-source interface over an ``(M, N, N)`` array already in memory."""

    def __init__(self, array: np.ndarray):
        arr = np.asarray(array)
        if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
            raise ValueError(f"expected an (M, N, N) pattern stack, got shape {arr.shape}")
        self._arr = arr
        self.shape = tuple(int(v) for v in arr.shape)
        self.dtype = arr.dtype

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        return self._arr[start:stop]

    def gather(self, indices) -> np.ndarray:
        return to_amplitude(self._arr[self._check_indices(indices)])


def _close_file(fh, tmpdir: Optional[str]) -> None:
    fh.close()
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


class PatternFile(_Source):
    """Patterns of one C-order ``(M, N, N)`` array stored raw at ``offset`` bytes in ``path``.

    ``source`` and ``key`` name the data file and key in error messages. ``crc`` (with
    ``crc_prefix``, the member bytes before the data, and ``crc_suffix``) is checked when
    :meth:`raw_chunks` has read every pattern, so in-place reads still detect corrupt archives.
    ``tmpdir`` is removed on :meth:`close`.
    """

    def __init__(self, path: str, offset: int, shape: tuple[int, int, int], dtype: np.dtype, *,
                 source: str, key: str, member: str, crc: Optional[int] = None,
                 crc_prefix: bytes = b"", crc_suffix: bytes = b"",
                 tmpdir: Optional[str] = None):
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(dtype)
        self.source, self.key, self.member = source, key, member
        self._offset = int(offset)
        self._pattern_bytes = self.N * self.N * self.dtype.itemsize
        self._crc, self._crc_prefix, self._crc_suffix = crc, crc_prefix, crc_suffix
        self._fh = open(path, "rb", buffering=0)
        self._finalizer = weakref.finalize(self, _close_file, self._fh, tmpdir)

    def _unreadable(self, kind: str, detail: str) -> DataContractError:
        return DataContractError(f"{self.source}: key '{self.key}': unreadable array "
                                 f"({kind}: {detail})")

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        buf = np.empty((stop - start, self.N, self.N), dtype=self.dtype)
        view = memoryview(buf.reshape(-1).view(np.uint8))
        self._fh.seek(self._offset + start * self._pattern_bytes)
        done = 0
        while done < view.nbytes:
            got = self._fh.readinto(view[done:])
            if not got:
                raise self._unreadable("EOFError", f"file ends inside pattern "
                                                   f"{start + done // self._pattern_bytes}")
            done += got
        return buf

    def raw_chunks(self, chunk_patterns: int) -> Iterator[tuple[int, np.ndarray]]:
        crc = zlib.crc32(self._crc_prefix)
        for start, raw in super().raw_chunks(chunk_patterns):
            if self._crc is not None:
                crc = zlib.crc32(raw.reshape(-1).view(np.uint8), crc)
            yield start, raw
        if self._crc is not None and zlib.crc32(self._crc_suffix, crc) != self._crc:
            raise self._unreadable("BadZipFile", f"Bad CRC-32 for file {self.member!r}")

    def close(self) -> None:
        self._finalizer()


def _read_npy_header(fh) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream at the position of ``fh``."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


def _streamable(shape: tuple, fortran: bool, dtype: np.dtype) -> bool:
    return (len(shape) == 3 and not fortran and dtype.kind in "iuf" and not dtype.hasobject
            and dtype.itemsize > 0)


def _open_stored(path: str, info: zipfile.ZipInfo, **names) -> Optional[PatternFile]:
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            return None
        signature, name_len, extra_len = _LOCAL_HEADER.unpack(head)
        if signature != _LOCAL_SIGNATURE:
            return None
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        fh.seek(start)
        shape, fortran, dtype = _read_npy_header(fh)
        if not _streamable(shape, fortran, dtype):
            return None
        offset = fh.tell()
        data_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        end = offset + data_bytes
        if end > start + info.file_size:
            return None
        fh.seek(start)
        prefix = fh.read(offset - start)
        fh.seek(end)
        suffix = fh.read(start + info.file_size - end)
    return PatternFile(path, offset, shape, dtype, crc=info.CRC, crc_prefix=prefix,
                       crc_suffix=suffix, **names)


def _open_inflated(zf: zipfile.ZipFile, info: zipfile.ZipInfo, **names) -> Optional[PatternFile]:
    with zf.open(info) as src:
        shape, fortran, dtype = _read_npy_header(src)
        if not _streamable(shape, fortran, dtype):
            return None
        tmpdir = tempfile.mkdtemp(prefix="ptycho-patterns-")
        path = os.path.join(tmpdir, "patterns.raw")
        try:
            with open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_BLOCK)    # zipfile checks the CRC at the end
            return PatternFile(path, 0, shape, dtype, tmpdir=tmpdir, **names)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise


def open_pattern_member(source: str, key: str) -> Optional[PatternFile]:
    """A :class:`PatternFile` over member ``key`` of the ``.npz`` archive ``source``.

    Returns ``None`` when the member is missing or not a C-order 3-D numeric ``.npy`` (format 1
    or 2) that can be read in place or inflated; the caller then reads it eagerly, which gives
    the contract's messages for whatever is wrong with it.

    Raises:
        DataContractError: the member cannot be inflated (corrupt data, bad CRC).
    """
    member = key + ".npy"
    names = dict(source=source, key=key, member=member)
    try:
        with zipfile.ZipFile(source) as zf:
            info = zf.getinfo(member)
            if info.flag_bits & 0x1:                          # encrypted
                return None
            if info.compress_type == zipfile.ZIP_STORED:
                return _open_stored(source, info, **names)
            try:
                return _open_inflated(zf, info, **names)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise DataContractError(f"{source}: key '{key}': unreadable array "
                                        f"({type(exc).__name__}: {exc})") from exc
    except DataContractError:
        raise
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError):
        return None
