"""Slow phase of a stitched object from the diffraction patterns' centres of mass (NumPy only).

A network reconstructs each group of patterns on its own, and a group does not fix the phase
that varies slowly across the scan: each group's constant phase is free, and the stitched
object comes out with its slow phase too flat. The patterns do carry it. For an exit wave
``psi = P_m · O_m`` the centre of mass of its far-field intensity, in cycles per pixel, is the
intensity-weighted mean phase gradient (first-moment theorem of the Fourier transform)::

    <k>_m = (1 / 2π) · Σ_r |psi(r)|² ∇arg psi(r) / Σ_r |psi(r)|²

Multiplying the object by ``exp(i χ)`` leaves ``|psi|²`` unchanged and moves ``<k>_m`` by
``(1/2π) Σ_r w_m(r) ∇χ(r)`` with ``w_m = |P_m|² |O_m|² / Σ |P_m|² |O_m|²``. The difference
``g_m = 2π (<k>_measured − <k>_predicted)`` (rad per pixel, ``(y, x)``) is therefore a weighted
mean of the phase-gradient error around scan position ``m``, for any probe. One correction
step solves, over every canvas pixel that a pattern sees, the linear least-squares problem::

    min_χ  Σ_m |Σ_r w_m(r) ∇χ(r) − g_m|²  +  α ρ Σ_r |∇χ(r)|²

(central differences in the data term, forward differences in the smoothness term, ``ρ`` =
patterns per seen pixel, so that ``α`` = ``smoothing`` does not depend on the size of the scan)
by LSQR, and multiplies the object by ``exp(i χ)``; the amplitude is never changed. The mean of
``g_m`` over the scan is removed first: a phase ramp over the whole object is the usual
ptychographic ambiguity (and an off-centre detector would put one there), so it is left as it
is. A second step corrects what the linearisation and the amplitude weights left.

The forward model and the sub-pixel handling are those of ``ptycho.refine.ScanLikelihood``
(the probe moves by each position's fraction; integer slices of the canvas), so the predicted
centres of mass are those of the refinement's likelihood. Cost per step: one far field per
pattern plus LSQR on ``2 M`` equations; the weights take about ``16 M N²`` bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import LinearOperator, lsqr

from ptycho.refine import ScanLikelihood, check_scan_inputs

__all__ = ["PhaseCorrection", "centre_of_mass", "com_phase_correction", "DEFAULT_SMOOTHING"]

DEFAULT_SMOOTHING = 0.5
_WHO = "com_phase_correction"
_CHUNK = 256                       # patterns per vectorised block of the weights
_LSQR_ITERATIONS = 1000
_LSQR_TOLERANCE = 1e-6
_PIXELS_PER_BIN = 32               # χ on a grid N // 32 canvas pixels apart (2 for N = 64)


@dataclass
class PhaseCorrection:
    """Corrected (H, W) complex64 object (amplitude unchanged); ``residual_rms``: the root mean
    square of the centre-of-mass phase-gradient mismatch ``g_m`` (rad/pixel, scan mean removed)
    before each step and after the last (``steps + 1`` values); ``correction_range``: peak-to-
    peak of each step's ``χ`` on the seen pixels (rad); ``solver_iterations``: LSQR iterations
    of each step; ``seconds`` of wall time."""
    obj: np.ndarray
    steps: int
    smoothing: float
    residual_rms: list = field(default_factory=list)
    correction_range: list = field(default_factory=list)
    solver_iterations: list = field(default_factory=list)
    seconds: float = 0.0


def centre_of_mass(intensity) -> np.ndarray:
    """(M, 2) centre of mass ``(ky, kx)`` in cycles per pixel of (M, N, N) far-field
    intensities with the zero frequency at ``(N//2, N//2)``; an all-zero pattern gives 0."""
    intensity = np.asarray(intensity, np.float64)
    if intensity.ndim != 3:
        raise ValueError(f"centre_of_mass: intensity must be (M, N, N), got {intensity.shape}")
    N = intensity.shape[-1]
    k = (np.arange(N) - N // 2) / N
    total = intensity.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    ky = intensity.sum(axis=2) @ k / safe
    kx = intensity.sum(axis=1) @ k / safe
    return np.stack([ky, kx], axis=1)


def _central_gradient(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences ``(f[i+1] − f[i−1]) / 2`` along each axis, zero outside ``f``."""
    p = np.pad(f, 1)
    return 0.5 * (p[2:, 1:-1] - p[:-2, 1:-1]), 0.5 * (p[1:-1, 2:] - p[1:-1, :-2])


class _GradientSystem:
    """The linear map ``χ (seen coarse pixels) -> [Σ w_m ∂yχ, Σ w_m ∂xχ, √λ Dy χ, √λ Dx χ]``
    (one row per pattern and per seen pixel pair) and its adjoint (see module doc).
    ``χ`` lives on a grid ``bin`` times coarser than the canvas (it is smooth on the scale of
    the probe); its gradients are per canvas pixel, and each pattern's weights are summed over
    the coarse pixels. The weights are kept as a sparse (M, coarse pixels) matrix."""

    def __init__(self, weights: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 seen: np.ndarray, lam: float, bin: int) -> None:
        M, N = weights.shape[0], weights.shape[1]
        H, W = seen.shape
        Hc, Wc = -(-H // bin), -(-W // bin)
        coarse = ((rows[:, :, None] // bin) * Wc + cols[:, None, :] // bin).astype(np.int32)
        w = csr_matrix((weights.reshape(-1), coarse.reshape(-1),
                        np.arange(0, M * N * N + 1, N * N)), shape=(M, Hc * Wc))
        w.sum_duplicates()                                # pixels of one coarse pixel summed
        self.w, self.wt = w, w.T.tocsr()
        padded = np.zeros((Hc * bin, Wc * bin), bool)
        padded[:H, :W] = seen
        seen_c = padded.reshape(Hc, bin, Wc, bin).any(axis=(1, 3))
        self.bin, self.fine_shape = bin, (H, W)
        self.shape2d = seen_c.shape
        self.index = np.flatnonzero(seen_c)
        self.pair_y = seen_c[1:, :] & seen_c[:-1, :]    # forward differences inside the seen set
        self.pair_x = seen_c[:, 1:] & seen_c[:, :-1]
        self.root_lam = float(np.sqrt(lam))
        self.sizes = (M, M, int(self.pair_y.sum()), int(self.pair_x.sum()))

    def _canvas(self, x: np.ndarray) -> np.ndarray:
        f = np.zeros(self.shape2d)
        f.flat[self.index] = x
        return f

    def _weighted_means(self, g: np.ndarray) -> np.ndarray:
        return self.w @ (g.ravel() / self.bin)

    def _scatter(self, values: np.ndarray) -> np.ndarray:
        return (self.wt @ values).reshape(self.shape2d) / self.bin

    def matvec(self, x: np.ndarray) -> np.ndarray:
        f = self._canvas(x)
        gy, gx = _central_gradient(f)
        dy = (f[1:, :] - f[:-1, :])[self.pair_y]
        dx = (f[:, 1:] - f[:, :-1])[self.pair_x]
        return np.concatenate([self._weighted_means(gy), self._weighted_means(gx),
                               self.root_lam * dy, self.root_lam * dx])

    def rmatvec(self, y: np.ndarray) -> np.ndarray:
        ay, ax, ry, rx = np.split(np.asarray(y, np.float64), np.cumsum(self.sizes)[:-1])
        # The central difference with zero boundary is antisymmetric: its adjoint is −itself.
        by, _ = _central_gradient(self._scatter(ay))
        _, bx = _central_gradient(self._scatter(ax))
        out = -(by + bx)
        dy = np.zeros((self.shape2d[0] - 1, self.shape2d[1]))
        dy[self.pair_y] = self.root_lam * ry
        dx = np.zeros((self.shape2d[0], self.shape2d[1] - 1))
        dx[self.pair_x] = self.root_lam * rx
        out[1:, :] += dy
        out[:-1, :] -= dy
        out[:, 1:] += dx
        out[:, :-1] -= dx
        return out.flat[self.index]

    def solve(self, g: np.ndarray) -> np.ndarray:
        """Least-squares ``χ`` on the canvas for mismatches ``g`` (M, 2); the LSQR iteration
        count is kept in ``iterations``."""
        n = len(self.index)
        op = LinearOperator((sum(self.sizes), n), matvec=self.matvec, rmatvec=self.rmatvec,
                            dtype=np.float64)
        b = np.concatenate([g[:, 0], g[:, 1], np.zeros(self.sizes[2] + self.sizes[3])])
        x, _, iterations = lsqr(op, b, atol=_LSQR_TOLERANCE, btol=_LSQR_TOLERANCE,
                                iter_lim=_LSQR_ITERATIONS)[:3]
        self.iterations = int(iterations)
        # Bilinear interpolation back to the canvas; coarse pixel I is centred on
        # canvas pixel bin·I + (bin−1)/2.
        H, W = self.fine_shape
        y = (np.arange(H) - (self.bin - 1) / 2) / self.bin
        x_ = (np.arange(W) - (self.bin - 1) / 2) / self.bin
        grid = np.meshgrid(y, x_, indexing="ij")
        return map_coordinates(self._canvas(x), grid, order=1, mode="nearest")


def _weights(like: ScanLikelihood, o: np.ndarray) -> np.ndarray:
    """(M, N, N) float32 ``|P_m|² |O_m|²`` per pattern, normalised to sum 1 (see module doc)."""
    w = like.exit_intensities(o)
    total = w.sum(axis=(1, 2), dtype=np.float64)
    w /= np.where(total > 0, total, 1.0)[:, None, None].astype(np.float32)
    return w


def com_phase_correction(obj, diffraction, positions, probe, *, steps: int = 2,
                         smoothing: float = DEFAULT_SMOOTHING,
                         progress: Optional[Callable[[int, float], None]] = None
                         ) -> PhaseCorrection:
    """Correct the slow phase of ``obj`` (H, W complex, canvas frame) from the centres of mass
    of ``diffraction`` (M, N, N amplitudes ``sqrt(counts)``, zero frequency at
    ``(N//2, N//2)``) measured at ``positions`` (M, 2) patch centres ``(y, x)`` in canvas
    pixels with ``probe`` (N, N); ``steps`` correction steps with smoothness weight
    ``smoothing`` (see module doc). ``progress(step, residual_rms)`` is called after each step.
    Pixels no pattern sees, and every amplitude, are returned unchanged."""
    t0 = time.perf_counter()
    obj, diffraction, positions, probe = check_scan_inputs(obj, diffraction, positions, probe,
                                                           who=_WHO)
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"{_WHO}: steps must be >= 0, got {steps}")
    if not (smoothing > 0 and np.isfinite(smoothing)):
        raise ValueError(f"{_WHO}: smoothing must be > 0, got {smoothing}")
    counts = diffraction.astype(np.float32) ** 2
    like = ScanLikelihood(counts, positions, probe, 1.0, obj.shape)
    measured = centre_of_mass(counts)
    o = np.zeros(like.padded_shape, np.complex64)
    o[like.inner] = obj
    seen = like.seen()
    lam = float(smoothing) * like.M / max(int(seen.sum()), 1)
    bin_ = max(1, like.N // _PIXELS_PER_BIN)

    def mismatch() -> np.ndarray:
        g = 2 * np.pi * (measured - centre_of_mass(like.expected_counts(o)))
        return g - g.mean(axis=0)

    g = mismatch()
    residual, ranges, iterations = [float(np.sqrt(np.mean(g ** 2)))], [], []
    for step in range(1, steps + 1):
        system = _GradientSystem(_weights(like, o), like.patch_rows, like.patch_cols, seen,
                                 lam, bin_)
        chi = system.solve(g)
        ranges.append(float(np.ptp(chi[seen])))
        iterations.append(system.iterations)
        o *= np.exp(1j * chi).astype(np.complex64)
        g = mismatch()
        residual.append(float(np.sqrt(np.mean(g ** 2))))
        if progress is not None:
            progress(step, residual[-1])
    out = np.where(seen[like.inner], o[like.inner], np.asarray(obj, np.complex64))
    return PhaseCorrection(obj=out.astype(np.complex64), steps=steps, smoothing=float(smoothing),
                           residual_rms=residual, correction_range=ranges,
                           solver_iterations=iterations,
                           seconds=time.perf_counter() - t0)
