"""Atomic file writes and checksums.

Every output file of the library is written through these helpers: the content goes to a
temporary file in the destination directory, is flushed and fsynced, and is then moved over the
destination with ``os.replace``. A reader therefore sees either the previous complete file or the
new complete file, never a partial one, even if the writer is interrupted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "current_umask",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npz",
    "atomic_save_npy",
    "sha256_file",
    "fsync_dir",
]

_CHUNK = 1 << 20


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a directory entry to disk so that a rename inside it survives a crash.

    A no-op on platforms where directories cannot be opened (Windows).
    """
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the destination as a ``Path``.

    The parent directory must exist. The temporary file lives beside the destination (same
    filesystem, so the final ``os.replace`` is atomic) and is removed if anything fails.
    """
    dest = Path(path)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {dest}: directory {parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(parent)
    return dest


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write a string atomically (UTF-8 by default)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Serialise ``obj`` as JSON (sorted keys, trailing newline) and write it atomically.

    Non-finite floats are refused (``allow_nan=False``) because strict JSON cannot hold them.
    """
    text = json.dumps(obj, indent=indent, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def atomic_save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                    *, compressed: bool = False) -> Path:
    """Save named arrays as an ``.npz`` archive atomically.

    Object arrays are refused (they would need pickling to read back). The archive is built in
    memory and written in one go, so ``path`` keeps exactly the name given (NumPy's own savers
    append ``.npz`` to names lacking it).
    """
    clean: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"array {key!r} has dtype object; refusing to save it (would need pickle)")
        clean[key] = arr
    buf = io.BytesIO()
    saver = np.savez_compressed if compressed else np.savez
    saver(buf, **clean)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save one array as ``.npy`` atomically (no pickling; object arrays refused)."""
    arr = np.asarray(array)
    if arr.dtype == object:
        raise TypeError("array has dtype object; refusing to save it (would need pickle)")
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
