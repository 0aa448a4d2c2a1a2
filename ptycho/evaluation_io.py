"""Reading the inputs of ``ptycho-evaluate``: reconstruction files and reference data files.

A reconstruction NPZ (written by ``ptycho.inference`` or ``ptycho_torch.inference``, or by
another tool) holds ``object`` (or ``obj``) complex (H, W), or ``amplitude`` + ``phase``; and
optionally the region to evaluate (``illuminated_mask``, else ``scanned_mask``, else
``weight``), ``origin`` (y0, x0) and/or ``canvas_y`` / ``canvas_x`` (object pixel coordinates
of the canvas rows / columns), scan positions in canvas
pixels (``scan_positions`` (M, 2) (y, x), or ``ycoords`` / ``xcoords``) and ``stitch_crop``.
A data NPZ holds ``objectGuess`` in object pixels (origin (0, 0)); with diffraction data it is
validated by ``ptycho.data.contract.load_npz`` and gives the scan positions and N.

Archives are read with ``allow_pickle=False``; every malformed input raises
:class:`EvaluationError` naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptycho.data.contract import npz_signature_problem

__all__ = ["EvaluationError", "ObjectImage", "RECON_FILE", "load_object_file", "npz_keys"]

RECON_FILE = "reconstruction.npz"
_WANTED = {"object", "obj", "amplitude", "phase", "illuminated_mask", "scanned_mask", "weight",
           "origin", "canvas_y", "canvas_x", "scan_positions", "xcoords", "ycoords", "stitch_crop",
           "objectGuess", "probeGuess"}


class EvaluationError(ValueError):
    """Invalid evaluation input; the message names the file, the key and what was wrong."""


@dataclass(frozen=True)
class ObjectImage:
    """One complex image with what is known about its pixel grid and scanned region.

    obj: (H, W) complex128. origin: object pixel (y0, x0) of pixel (0, 0), or None when
    unknown. mask: (H, W) bool scanned region or None; mask_source says where it came from.
    positions: (M, 2) (y, x) scan positions in this image's pixels, or None. footprint: side in
    pixels of the square each position covers (``stitch_crop`` or N), or None. kind:
    ``"reconstruction"`` or ``"data"``; key: the key(s) the image was read from.
    """

    obj: np.ndarray
    source: str
    key: str
    kind: str
    origin: tuple[int, int] | None = None
    mask: np.ndarray | None = None
    mask_source: str | None = None
    positions: np.ndarray | None = None
    footprint: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.obj.shape)


def _fail(src: str, key: str | None, message: str) -> EvaluationError:
    where = f"{src}: key '{key}': " if key else f"{src}: "
    return EvaluationError(where + message)


def _resolve(path, role: str) -> Path:
    p = Path(path)
    if p.is_dir():
        if not (p / RECON_FILE).is_file():
            raise EvaluationError(f"{role} {p}: is a directory without {RECON_FILE}")
        return p / RECON_FILE
    if not p.is_file():
        raise EvaluationError(f"{role} {p}: file does not exist")
    return p


def _read_npz(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """All key names of the archive and the arrays of the keys this module uses (no pickle)."""
    with open(path, "rb") as fh:
        problem = npz_signature_problem(fh.read(6))
    if problem:
        raise _fail(str(path), None, problem)
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # NumPy raises many types for a file that is not an archive
        raise _fail(str(path), None, f"not a readable NPZ archive ({type(exc).__name__}: {exc})")
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise _fail(str(path), None, "expected an NPZ archive of named arrays, got a single array")
    arrays: dict[str, np.ndarray] = {}
    with loaded:
        keys = list(loaded.files)
        for key in keys:
            if key in _WANTED:
                try:
                    arrays[key] = loaded[key]
                except Exception as exc:
                    raise _fail(str(path), key, f"unreadable array ({type(exc).__name__}: {exc})")
    return keys, arrays


def _check_finite(src: str, key: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        raise _fail(src, key, f"{int(bad.sum())} non-finite value(s) (NaN or Inf), first at "
                              f"index {first}")


def _image(src: str, key: str, value, real: bool = False) -> np.ndarray:
    a = np.asarray(value)
    kinds = "biuf" if real else "biufc"
    if a.dtype.kind not in kinds:
        what = "real" if real else "numeric"
        raise _fail(src, key, f"expected a {what} 2-D (H, W) image, got dtype {a.dtype}")
    if a.ndim != 2 or 0 in a.shape:
        raise _fail(src, key, f"expected a 2-D (H, W) image, got shape {a.shape}")
    _check_finite(src, key, a)
    return a


def _vector(src: str, key: str, value, length: int | None = None) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind not in "biuf" or a.ndim != 1 or (length is not None and a.size != length):
        want = f"({length},)" if length is not None else "(M,)"
        raise _fail(src, key, f"expected a real 1-D array of shape {want}, got dtype {a.dtype}, "
                              f"shape {a.shape}")
    _check_finite(src, key, a)
    return a.astype(np.float64)


def _integer(src: str, key: str, value: float) -> int:
    if float(value) != round(float(value)):
        raise _fail(src, key, f"expected integer pixel coordinates, got {value}")
    return int(round(float(value)))


def _recon_origin(src: str, arrays: dict, H: int, W: int) -> tuple[int, int] | None:
    origin = None
    if "origin" in arrays:
        o = _vector(src, "origin", np.ravel(arrays["origin"]), 2)
        origin = (_integer(src, "origin", o[0]), _integer(src, "origin", o[1]))
    for key, n, axis in (("canvas_y", H, 0), ("canvas_x", W, 1)):
        if key not in arrays:
            continue
        c = _vector(src, key, arrays[key], n)
        if n > 1 and not np.allclose(np.diff(c), 1.0):
            raise _fail(src, key, "expected consecutive pixel coordinates (step 1)")
        start = _integer(src, key, c[0])
        if origin is not None and origin[axis] != start:
            raise _fail(src, key, f"starts at {start} but 'origin' says {origin[axis]}")
        if origin is None and "canvas_y" in arrays and "canvas_x" in arrays:
            origin = (_integer(src, "canvas_y", arrays["canvas_y"][0]),
                      _integer(src, "canvas_x", arrays["canvas_x"][0]))
    return origin


def _positions(src: str, arrays: dict) -> np.ndarray | None:
    if "scan_positions" in arrays:
        p = np.asarray(arrays["scan_positions"])
        if p.dtype.kind not in "biuf" or p.ndim != 2 or p.shape[1] != 2:
            raise _fail(src, "scan_positions", f"expected (M, 2) (y, x) positions, got dtype "
                                               f"{p.dtype}, shape {p.shape}")
        _check_finite(src, "scan_positions", p)
        return p.astype(np.float64)
    if "ycoords" in arrays and "xcoords" in arrays:
        y = _vector(src, "ycoords", arrays["ycoords"])
        x = _vector(src, "xcoords", arrays["xcoords"], y.size)
        return np.stack([y, x], axis=1)
    return None


def _from_reconstruction(src: str, arrays: dict) -> ObjectImage:
    key = "object" if "object" in arrays else "obj" if "obj" in arrays else None
    if key is not None:
        obj = _image(src, key, arrays[key]).astype(np.complex128)
    else:
        amp = _image(src, "amplitude", arrays["amplitude"], real=True)
        phase = _image(src, "phase", arrays["phase"], real=True)
        if amp.shape != phase.shape:
            raise _fail(src, "phase", f"shape {phase.shape} differs from 'amplitude' {amp.shape}")
        if np.any(amp < 0):
            raise _fail(src, "amplitude", f"{int(np.sum(amp < 0))} negative value(s); an "
                                          "amplitude must be >= 0")
        obj = amp.astype(np.float64) * np.exp(1j * phase.astype(np.float64))
        key = "amplitude+phase"
    H, W = obj.shape
    mask, mask_source = None, None
    for mkey in ("illuminated_mask", "scanned_mask", "weight"):
        if mkey not in arrays:
            continue
        m = np.asarray(arrays[mkey])
        if m.shape != (H, W) or m.dtype.kind not in "biuf":
            raise _fail(src, mkey, f"expected a ({H}, {W}) array like '{key}', got dtype "
                                   f"{m.dtype}, shape {m.shape}")
        _check_finite(src, mkey, m)
        mask, mask_source = m > 0 if mkey == "weight" else m > 0.5, f"{mkey} ({src})"
        if not mask.any():
            raise _fail(src, mkey, "selects no pixel: the scanned region is empty")
        break
    footprint = None
    if "stitch_crop" in arrays:
        c = np.ravel(np.asarray(arrays["stitch_crop"]))
        if c.size != 1 or c.dtype.kind not in "iuf" or not c[0] >= 1:
            raise _fail(src, "stitch_crop", f"expected one positive integer, got {c!r}")
        footprint = _integer(src, "stitch_crop", c[0])
    return ObjectImage(obj=obj, source=src, key=key, kind="reconstruction",
                       origin=_recon_origin(src, arrays, H, W), mask=mask,
                       mask_source=mask_source, positions=_positions(src, arrays),
                       footprint=footprint)


def _from_data(path: Path, keys: list[str], arrays: dict) -> ObjectImage:
    src = str(path)
    if "diff3d" in keys or "diffraction" in keys:
        from ptycho.data.contract import load_npz

        data = load_npz(path)      # full contract validation; errors name the file and key
        return ObjectImage(obj=np.asarray(data.object, dtype=np.complex128), source=src,
                           key="objectGuess", kind="data", origin=(0, 0),
                           positions=np.asarray(data.positions, dtype=np.float64),
                           footprint=int(data.N))
    obj = _image(src, "objectGuess", arrays["objectGuess"]).astype(np.complex128)
    positions = None
    if "ycoords" in arrays and "xcoords" in arrays:
        y = _vector(src, "ycoords", arrays["ycoords"])
        positions = np.stack([y, _vector(src, "xcoords", arrays["xcoords"], y.size)], axis=1)
    footprint = None
    probe = arrays.get("probeGuess")
    if probe is not None and np.ndim(probe) == 2 and probe.shape[0] == probe.shape[1]:
        footprint = int(probe.shape[0])
    return ObjectImage(obj=obj, source=src, key="objectGuess", kind="data", origin=(0, 0),
                       positions=positions, footprint=footprint)


def load_object_file(path, role: str = "reconstruction") -> ObjectImage:
    """Read the complex image of a reconstruction or data NPZ (a directory means its
    ``reconstruction.npz``).

    ``role="reconstruction"`` prefers reconstruction keys (``object``, ``obj``, ``amplitude`` +
    ``phase``) over ``objectGuess``; ``role="reference"`` prefers ``objectGuess``. Raises
    :class:`EvaluationError` (or ``DataContractError`` for a malformed data file), naming the
    file and key, for a missing image, a wrong shape or dtype, or non-finite values.
    """
    p = _resolve(path, role)
    keys, arrays = _read_npz(p)
    has_recon = bool({"object", "obj"} & set(keys)) or {"amplitude", "phase"} <= set(keys)
    order = ("recon", "data") if role == "reconstruction" else ("data", "recon")
    for kind in order:
        if kind == "recon" and has_recon:
            return _from_reconstruction(str(p), arrays)
        if kind == "data" and "objectGuess" in keys:
            return _from_data(p, keys, arrays)
    half = [k for k in ("amplitude", "phase") if k in keys]
    if len(half) == 1:
        other = "phase" if half[0] == "amplitude" else "amplitude"
        raise _fail(str(p), other, f"missing: the file has '{half[0]}' but no '{other}'")
    raise _fail(str(p), None, "no object image: expected key 'object' (or 'obj', or 'amplitude' "
                              "and 'phase') of a reconstruction, or 'objectGuess' of a data file; "
                              f"the file holds keys {sorted(keys)}")


def npz_keys(path) -> list[str]:
    """Key names of the NPZ archive at ``path`` (a directory means its reconstruction.npz)."""
    return _read_npz(_resolve(path, "file"))[0]
