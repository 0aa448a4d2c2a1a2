"""Physics refinement of a stitched object against the measured patterns (NumPy only).

The network's stitched object is a fast first estimate. ``refine_object`` improves it by
gradient steps on the same Poisson likelihood the network was trained with, now with every
object pixel free and every scan pattern fitted jointly (the overlap of the whole scan, not of
one group); the probe is fixed or, optionally, refined with it. It is the same for both backends, so a TensorFlow and a
PyTorch model that stitch the same object also refine to the same object.

Forward model (DESIGN §2): expected counts ``λ_m = (s · |F(P · O_m)|)²`` with ``O_m`` the
N x N patch centred on scan position ``m``, ``F`` the unitary centred far field and ``s`` the
model's intensity scale, so the refined object keeps the network's amplitude units. Sub-pixel
positions are handled by moving the probe instead of the object: with ``p = n + f`` (integer
``n``, fraction ``f``), ``|F(P · O(· + n + f))| = |F(translate(P, f) · O(· + n))|``, since the two
exit waves differ by a translation. On a pixel grid this holds where probe and object together
stay inside the Nyquist band; for the default defocused probe at N=64 the expected counts differ
from the object-shift model of ``ptycho.physics.extract_patches`` by a few 1e-3. Each step then
needs only integer slices of the canvas and two FFTs per pattern. Parameters are the
log-amplitude and the phase of every canvas pixel, updated with Adam (full-scan gradient each
step), which keeps the amplitude positive and the phase unbounded; pixels lit by less than the
metrics' illumination threshold (``ptycho.illumination.ILLUMINATION_FRACTION`` of the scan's
maximum summed probe intensity) take proportionally smaller steps, so the barely measured rim
does not drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from scipy import fft as _fft

from ptycho.illumination import ILLUMINATION_FRACTION, illumination_map

__all__ = ["RefineResult", "ScanLikelihood", "refine_object", "check_scan_inputs",
           "DEFAULT_LEARNING_RATE",
           "PROBE_STEP_FRACTION"]

DEFAULT_LEARNING_RATE = 0.1
_AMPLITUDE_FLOOR = 1e-3           # of the initial amplitude's maximum: log(|O|) stays finite
_CHUNK = 256                      # patterns per vectorised block (bounds the memory per step)
_PROBE_CACHE_BYTES = 512 * 2 ** 20
PROBE_STEP_FRACTION = 0.1         # probe step, per unit of learning rate, of its peak amplitude


@dataclass
class RefineResult:
    """Refined (H, W) complex64 object; the global amplitude factor applied to the start so that
    it predicts the measured photon total; the mean per-pattern NLL (``λ − K log λ``, summed
    over pixels) of that rescaled start and after the last step, and every ``record_every``
    steps (``history``: ``{"step", "nll"}`` with the NLL before that step's update); the probe
    (N, N complex64: the one given, or the refined one with ``refine_probe``)."""
    obj: np.ndarray
    steps: int
    amplitude_factor: float
    probe: np.ndarray
    nll_start: float
    nll_end: float
    history: list = field(default_factory=list)


def _ramps(frac: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis Fourier factors (M, N) that move an N x N image by ``frac`` (M, 2) pixels."""
    k = np.fft.fftfreq(N)
    ry = np.exp(-2j * np.pi * frac[:, 0, None] * k[None, :]).astype(np.complex64)
    rx = np.exp(-2j * np.pi * frac[:, 1, None] * k[None, :]).astype(np.complex64)
    return ry, rx


def _shifted_probes(probe_ft: np.ndarray, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
    """(M, N, N) probes moved by each pattern's fraction (circular Fourier shift of the N x N
    probe, whose support lies well inside its window)."""
    return _fft.ifft2(probe_ft * ry[:, :, None] * rx[:, None, :], workers=-1).astype(np.complex64)


def check_scan_inputs(obj, diffraction, positions, probe, who: str = "refine_object") -> tuple:
    """Validated ``(obj, diffraction, positions, probe)``; errors name ``who``."""
    obj = np.asarray(obj)
    if obj.ndim != 2 or not np.iscomplexobj(obj):
        raise ValueError(f"{who}: obj must be a complex (H, W) array, got "
                         f"{obj.dtype} of shape {obj.shape}")
    diffraction = np.asarray(diffraction)
    if diffraction.ndim != 3 or diffraction.shape[1] != diffraction.shape[2]:
        raise ValueError(f"{who}: diffraction must be (M, N, N), got {diffraction.shape}")
    M, N = diffraction.shape[0], diffraction.shape[1]
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (M, 2):
        raise ValueError(f"{who}: positions must be ({M}, 2) for {M} patterns, "
                         f"got {positions.shape}")
    probe = np.asarray(probe)
    if probe.shape != (N, N):
        raise ValueError(f"{who}: probe must be ({N}, {N}), got {probe.shape}")
    for name, a in (("obj", obj), ("diffraction", diffraction), ("positions", positions),
                    ("probe", probe)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{who}: {name} contains NaN or Inf")
    if M == 0:
        raise ValueError(f"{who}: no diffraction patterns given")
    return obj, diffraction, positions, probe


class ScanLikelihood:
    """Poisson NLL of a canvas against a scan, and its gradient (see module doc).

    ``counts`` (M, N, N) measured photons with the zero frequency at ``(N//2, N//2)``;
    ``positions`` (M, 2) patch centres ``(y, x)`` in canvas pixels; ``probe`` (N, N);
    ``intensity_scale`` ``s``; ``canvas_shape`` (H, W). Parameters live on the canvas padded so
    that every patch's integer slice fits: ``padded_shape``, with the canvas at ``inner``.
    """

    def __init__(self, counts, positions, probe, intensity_scale: float, canvas_shape) -> None:
        M, N = counts.shape[0], counts.shape[1]
        H, W = (int(v) for v in canvas_shape)
        self.M, self.N = M, N
        base = np.floor(positions).astype(np.int64)
        starts = base - N // 2
        pad_lo = np.maximum(-starts.min(axis=0), 0)
        pad_hi = np.maximum(starts.max(axis=0) + N - np.array([H, W]), 0)
        self.starts = starts + pad_lo
        self.padded_shape = (H + int(pad_lo[0] + pad_hi[0]), W + int(pad_lo[1] + pad_hi[1]))
        self.inner = (slice(int(pad_lo[0]), int(pad_lo[0]) + H),
                      slice(int(pad_lo[1]), int(pad_lo[1]) + W))
        # The unshifted FFT frame: the data's zero frequency moves to pixel (0, 0) once.
        self.counts = np.fft.ifftshift(np.asarray(counts, np.float32), axes=(-2, -1))
        self.total_counts = float(self.counts.sum(dtype=np.float64))
        self.positions = np.asarray(positions, np.float64)
        self.scale = np.float32(intensity_scale)
        self._ry, self._rx = _ramps(positions - base, N)
        self._cache = M * N * N * 8 <= _PROBE_CACHE_BYTES
        self._rows = self.starts[:, 0, None] + np.arange(N)
        self._cols = self.starts[:, 1, None] + np.arange(N)
        self.set_probe(probe)

    def set_probe(self, probe: np.ndarray) -> None:
        """Use ``probe`` (N, N, without the intensity scale) from now on."""
        self.probe = np.asarray(probe, np.complex64)
        self._probe_ft = _fft.fft2(self.probe * self.scale, workers=-1)
        # Shifted probes are kept when they fit in _PROBE_CACHE_BYTES, else made per block.
        self._probes = (_shifted_probes(self._probe_ft, self._ry, self._rx)
                        if self._cache else None)

    def _block_probes(self, sl: slice) -> np.ndarray:
        if self._probes is not None:
            return self._probes[sl]
        return _shifted_probes(self._probe_ft, self._ry[sl], self._rx[sl])

    def seen(self) -> np.ndarray:
        """(padded) bool mask of the pixels inside at least one patch."""
        mask = np.zeros(self.padded_shape, bool)
        for r0, c0 in self.starts:
            mask[r0:r0 + self.N, c0:c0 + self.N] = True
        return mask

    def illumination(self) -> np.ndarray:
        """(padded) summed probe intensity of the scan (``ptycho.illumination``), divided by its
        maximum."""
        origin = np.array([self.inner[0].start, self.inner[1].start], np.float64)
        total = illumination_map(self.probe, self.positions + origin, self.padded_shape)
        return (total / max(float(total.max()), 1e-30)).astype(np.float32)

    def _far_fields(self, o: np.ndarray):
        for lo in range(0, self.M, _CHUNK):
            sl = slice(lo, min(lo + _CHUNK, self.M))
            r, c = self._rows[sl], self._cols[sl]
            probe = self._block_probes(sl)
            yield sl, r[:, 0], c[:, 0], probe, _fft.fft2(
                probe * o[r[:, :, None], c[:, None, :]], norm="ortho", workers=-1)

    @property
    def patch_rows(self) -> np.ndarray:
        """(M, N) padded-canvas row of every pixel of each pattern's patch."""
        return self._rows

    @property
    def patch_cols(self) -> np.ndarray:
        """(M, N) padded-canvas column of every pixel of each pattern's patch."""
        return self._cols

    def exit_intensities(self, o: np.ndarray) -> np.ndarray:
        """(M, N, N) float32 ``|s · P_m · O_m|²`` of every pattern's exit wave in the object
        plane (``P_m`` the probe moved by the position's fraction) for the padded canvas ``o``."""
        out = np.empty((self.M, self.N, self.N), np.float32)
        for lo in range(0, self.M, _CHUNK):
            sl = slice(lo, min(lo + _CHUNK, self.M))
            r, c = self._rows[sl], self._cols[sl]
            psi = self._block_probes(sl) * o[r[:, :, None], c[:, None, :]]
            out[sl] = psi.real ** 2 + psi.imag ** 2
        return out

    def expected_counts(self, o: np.ndarray) -> np.ndarray:
        """(M, N, N) expected photons ``λ`` for the padded canvas ``o``, zero frequency centred
        (the layout of the data)."""
        lam = np.empty((self.M, self.N, self.N), np.float32)
        for sl, *_, far in self._far_fields(o):
            lam[sl] = far.real ** 2 + far.imag ** 2
        return np.fft.fftshift(lam, axes=(-2, -1))

    def predicted_total(self, o: np.ndarray) -> float:
        """Expected photons summed over every pattern for the padded complex canvas ``o``."""
        return sum(float(np.sum(f.real ** 2 + f.imag ** 2, dtype=np.float64))
                   for *_, f in self._far_fields(o))

    def nll(self, log_amp: np.ndarray, phase: np.ndarray, gradient: bool = True,
            probe_gradient: bool = False):
        """Mean per-pattern NLL of ``O = exp(log_amp + i phase)`` (padded arrays) and, with
        ``gradient``, its derivatives with respect to ``log_amp`` and ``phase``; with
        ``probe_gradient`` also ``dNLL / d conj(probe)`` (N, N complex, Wirtinger; the real
        and imaginary parts' derivatives are twice its real and imaginary parts)."""
        o = np.exp(log_amp + 1j * phase).astype(np.complex64)
        grad = np.zeros(self.padded_shape, np.complex64) if gradient else None
        probe_ft_grad = np.zeros((self.N, self.N), np.complex64) if probe_gradient else None
        total, N = 0.0, self.N
        for sl, r0, c0, probe, far in self._far_fields(o):
            lam = np.maximum(far.real ** 2 + far.imag ** 2, 1e-8)
            k = self.counts[sl]
            total += float(np.sum(lam - k * np.log(lam), dtype=np.float64))
            if gradient or probe_gradient:
                back = _fft.ifft2((1.0 - k / lam) * far, norm="ortho", workers=-1)
            if gradient:
                # dNLL / d conj(patch), accumulated onto the canvas.
                g = np.conj(probe) * back
                for i in range(g.shape[0]):
                    grad[r0[i]:r0[i] + N, c0[i]:c0[i] + N] += g[i]
            if probe_gradient:
                # dNLL / d conj(shifted probe), moved back (the adjoint shift) and summed.
                rows, cols = self._rows[sl], self._cols[sl]
                gp = np.conj(o[rows[:, :, None], cols[:, None, :]]) * back
                spec = _fft.fft2(gp, workers=-1) * np.conj(self._ry[sl][:, :, None]
                                                           * self._rx[sl][:, None, :])
                probe_ft_grad += spec.sum(axis=0)
        value = total / self.M
        if not (gradient or probe_gradient):
            return value
        out = [value]
        if gradient:
            z = np.conj(grad) * o          # d/d(log|O|) = 2 Re z, d/d(phase) = -2 Im z
            out += [(2.0 * z.real / self.M).astype(np.float32),
                    (-2.0 * z.imag / self.M).astype(np.float32)]
        if probe_gradient:
            out.append((_fft.ifft2(probe_ft_grad, workers=-1) * self.scale / self.M)
                       .astype(np.complex64))
        return tuple(out)


def _adam(param, grad, m, v, step: int, size, beta1=0.9, beta2=0.999, eps=1e-8) -> None:
    """One in-place Adam update of ``param`` with step ``size`` (scalar or per element)."""
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    param -= (size * (m / (1 - beta1 ** step))
              / (np.sqrt(v / (1 - beta2 ** step)) + eps)).astype(param.dtype)


def refine_object(obj, diffraction, positions, probe, intensity_scale: float, *, steps: int,
                  learning_rate: float = DEFAULT_LEARNING_RATE, refine_probe: bool = False,
                  record_every: int = 0,
                  progress: Optional[Callable[[int, float], None]] = None) -> RefineResult:
    """Refine ``obj`` (H, W complex, canvas frame) against ``diffraction`` (M, N, N amplitudes
    ``sqrt(counts)``, zero frequency at ``(N//2, N//2)``) measured at ``positions`` (M, 2) patch
    centres ``(y, x)`` in canvas pixels, with the fixed ``probe`` (N, N) and the model's
    ``intensity_scale`` (see module doc). The start is first multiplied by the one amplitude
    factor that makes it predict the measured photon total; then ``steps`` Adam steps with
    ``learning_rate`` on the log-amplitude and phase. ``progress(step, nll)`` is called after
    every step with the NLL before that step's update. Canvas pixels no pattern sees are
    returned unchanged. ``refine_probe`` also refines the probe (real and imaginary part of
    each pixel, Adam steps of ``PROBE_STEP_FRACTION * learning_rate`` times the probe's peak
    amplitude), from the first tenth of the steps on, once the object has moved towards the
    data; the object and the probe then share the usual ambiguities (a global factor between
    them, small opposite shifts).
    """
    obj, diffraction, positions, probe = check_scan_inputs(obj, diffraction, positions, probe)
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"refine_object: steps must be >= 0, got {steps}")
    if not (learning_rate > 0 and np.isfinite(learning_rate)):
        raise ValueError(f"refine_object: learning_rate must be > 0, got {learning_rate}")
    s = float(intensity_scale)
    if not (s > 0 and np.isfinite(s)):
        raise ValueError(f"refine_object: intensity_scale must be > 0, got {intensity_scale}")
    like = ScanLikelihood(diffraction.astype(np.float32) ** 2, positions, probe, s, obj.shape)

    amp0 = np.abs(obj).astype(np.float64)
    floor = _AMPLITUDE_FLOOR * max(float(amp0.max()), 1e-30)
    log_amp = np.full(like.padded_shape, np.log(max(float(np.median(amp0)), floor)), np.float32)
    phase = np.zeros(like.padded_shape, np.float32)
    log_amp[like.inner] = np.log(np.maximum(amp0, floor))
    phase[like.inner] = np.angle(obj)
    predicted = like.predicted_total(np.exp(log_amp + 1j * phase).astype(np.complex64))
    factor = math.sqrt(like.total_counts / predicted) if predicted > 0 else 1.0
    log_amp += np.float32(math.log(factor))

    # Weakly illuminated pixels carry little information; their Adam steps shrink with it.
    damping = np.minimum(like.illumination() / ILLUMINATION_FRACTION, 1.0).astype(np.float32)
    params = (log_amp, phase)
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    probe_parts = np.stack([like.probe.real, like.probe.imag]).astype(np.float32)
    probe_moments = (np.zeros_like(probe_parts), np.zeros_like(probe_parts))
    probe_size = PROBE_STEP_FRACTION * learning_rate * float(np.abs(like.probe).max())
    probe_from = max(1, steps // 10)
    history = []
    nll_start = None
    for step in range(1, steps + 1):
        with_probe = refine_probe and step > probe_from
        value, *grads = like.nll(log_amp, phase, probe_gradient=with_probe)
        nll_start = value if nll_start is None else nll_start
        if record_every and (step - 1) % record_every == 0:
            history.append({"step": step - 1, "nll": value})
        for p, g, (m, v) in zip(params, grads[:2], moments):
            _adam(p, g, m, v, step, learning_rate * damping)
        if with_probe:
            g = grads[2]
            _adam(probe_parts, np.stack([2 * g.real, 2 * g.imag]), *probe_moments,
                  step - probe_from, probe_size)
            like.set_probe(probe_parts[0] + 1j * probe_parts[1])
        if progress is not None:
            progress(step, value)
    nll_end = like.nll(log_amp, phase, gradient=False)
    if record_every:
        history.append({"step": steps, "nll": nll_end})
    refined = np.exp(log_amp[like.inner] + 1j * phase[like.inner]).astype(np.complex64)
    out = np.where(like.seen()[like.inner], refined, np.asarray(obj, np.complex64))
    return RefineResult(obj=out, steps=steps, amplitude_factor=factor, probe=like.probe.copy(),
                        nll_start=float(nll_end if nll_start is None else nll_start),
                        nll_end=float(nll_end), history=history)
