"""Probe (illumination) helpers: the default probe, its normalisation and its support mask.

Conventions: a probe is an (N, N) complex64 array whose centre is pixel ``(N//2, N//2)`` (the
patch centre, see ``ptycho.physics``). Radii are measured in pixels from that centre:
``r[i, j] = sqrt((i - N//2)**2 + (j - N//2)**2)``.

Normalisation: the model and the simulator use ``normalize_probe(P)``, for which
``sum |P|**2 == (N/2)**2``; an object of unit amplitude then gives diffraction amplitudes with
``sum A**2 == (N/2)**2`` (the normalised-input convention of ``ptycho.physics``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_QUADRATIC_PHASE", "default_probe", "normalize_probe", "probe_mask",
           "radius_map"]


def _check_N(N) -> int:
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"probe side N must be a positive integer, got {N!r}")
    return int(N)


def radius_map(N: int) -> np.ndarray:
    """(N, N) float64 distance in pixels of each pixel from the centre pixel ``(N//2, N//2)``."""
    N = _check_N(N)
    k = np.arange(N, dtype=np.float64) - N // 2
    return np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)


def normalize_probe(probe, name: str = "probe") -> np.ndarray:
    """Scale a probe so that ``sum |P|**2 == (N/2)**2``.

    Parameters
    ----------
    probe : (N, N) complex or real array.
    name : how the probe is named in error messages (e.g. ``"probeGuess"``).

    Returns
    -------
    (N, N) complex64: ``probe * (N/2) / sqrt(sum |probe|**2)`` (computed in complex128).

    Raises ``ValueError`` if the probe is not square 2-D, contains NaN/Inf, or is all zero.
    """
    P = np.asarray(probe)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0:
        raise ValueError(f"{name} must be a square (N, N) array, got shape {P.shape}")
    if P.dtype.kind not in "biufc":
        raise ValueError(f"{name} must be numeric, got dtype {P.dtype}")
    P = P.astype(np.complex128)
    if not np.all(np.isfinite(P)):
        raise ValueError(f"{name} contains NaN or Inf")
    energy = float(np.sum(np.abs(P) ** 2))
    if energy <= 0.0:
        raise ValueError(f"{name} is all zero; it cannot be normalised")
    N = P.shape[0]
    return (P * ((N / 2.0) / np.sqrt(energy))).astype(np.complex64)


DEFAULT_QUADRATIC_PHASE = 2.0 * np.pi


def default_probe(N: int, *, diameter: float | None = None, edge_width: float = 1.0,
                  quadratic_phase: float = DEFAULT_QUADRATIC_PHASE) -> np.ndarray:
    """Default probe: a soft-edged disk with a quadratic (defocus) phase.

    Parameters
    ----------
    N : patch side in pixels.
    diameter : disk diameter in pixels, default ``N / 3``.
    edge_width : width in pixels of the soft edge. The amplitude is
        ``0.5 * (1 - tanh((r - R) / edge_width))`` with ``R = diameter / 2``: 0.5 at ``r = R``,
        about 0.88 one ``edge_width`` inside and 0.12 one ``edge_width`` outside.
    quadratic_phase : phase in radians at the disk edge; the phase is
        ``quadratic_phase * (r / R)**2`` (0 at the centre). The default, one wave (2 pi) of
        defocus, is what a slightly defocused focusing optic gives. It matters for learning:
        a probe with (nearly) flat phase is (nearly) real and centrosymmetric, so every single
        pattern is equally well explained by the object and its flipped complex conjugate
        (the twin image), and a network trained pattern by pattern cannot tell them apart
        (docs/quality.md). The local frequency of the phase at the edge,
        ``quadratic_phase / (pi R)`` cycles/px, is 0.19 for the default disk at N=64 and stays
        below Nyquist (0.5) for ``R > 4 px``. Pass 0 for a flat phase.

    Returns
    -------
    (N, N) complex64, normalised with ``normalize_probe`` (``sum |P|**2 == (N/2)**2``),
    centred on pixel ``(N//2, N//2)``.
    """
    N = _check_N(N)
    R = (N / 3.0 if diameter is None else float(diameter)) / 2.0
    if not (np.isfinite(R) and R > 0):
        raise ValueError(f"probe diameter must be a positive finite number, got {diameter!r}")
    if not (np.isfinite(edge_width) and edge_width > 0):
        raise ValueError(f"edge_width must be a positive finite number, got {edge_width!r}")
    if not np.isfinite(quadratic_phase):
        raise ValueError(f"quadratic_phase must be finite, got {quadratic_phase!r}")
    r = radius_map(N)
    amplitude = 0.5 * (1.0 - np.tanh((r - R) / float(edge_width)))
    phase = float(quadratic_phase) * (r / R) ** 2
    return normalize_probe(amplitude * np.exp(1j * phase), name="default probe")


def probe_mask(N: int) -> np.ndarray:
    """Circular probe support: (N, N) float32, 1 where ``r <= N/4``, else 0 (r from pixel
    ``(N//2, N//2)``)."""
    N = _check_N(N)
    return (radius_map(N) <= N / 4.0).astype(np.float32)
