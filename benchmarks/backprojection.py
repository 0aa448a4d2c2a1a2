"""A reconstruction without learning: every pattern back-projected on its own, then stitched.

Each diffraction pattern ``A_k`` (measured amplitudes) gets the far-field phase of the bare
probe, ``psi_k = ifft2(ifftshift(A_k * exp(i * angle(F(P)))))`` with ``F`` the unitary far field
of ``ptycho.physics``, and is divided by the probe, ``O_k = psi_k * conj(P) / (|P|^2 + eps)``
(``eps = 1e-3 * max|P|^2``, so the dark rim stays bounded). With ``--iterations K`` the patch is
then refined by ``K`` single-pattern error-reduction steps (illuminate, replace the far-field
amplitude by the measured one, back-project as before). The patches are stitched like an
inference run (probe-intensity weights, Fourier placement, ``ptycho.stitch.Stitcher``) and
scored on the illuminated region against ``objectGuess`` (``ptycho.metrics``).

It uses the physics and one pattern at a time, like a gridsize-1 network, and nothing learned:
a trained network whose stitched object scores below it has not learned more than the physics
gives for free.

    python -m benchmarks.backprojection TEST.npz [--iterations 0 5] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Iterator, Optional, Sequence

import numpy as np

from benchmarks.report import markdown_table
from ptycho.atomic import atomic_write_json
from ptycho.data.contract import load_npz
from ptycho.illumination import illumination_mask
from ptycho.metrics import evaluate_reconstruction
from ptycho.physics import far_field
from ptycho.stitch import Stitcher, probe_weight

__all__ = ["backproject_patches", "backprojection", "main"]

PROBE_REGULARISATION = 1e-3
BATCH = 256


def _inverse_far_field(field: np.ndarray) -> np.ndarray:
    """Inverse of ``ptycho.physics.far_field`` (unitary, zero frequency at the centre)."""
    return np.fft.ifft2(np.fft.ifftshift(field, axes=(-2, -1)), norm="ortho")


def _check_iterations(iterations: Sequence[int]) -> list[int]:
    counts = sorted({int(k) for k in iterations})
    if not counts or counts[0] < 0:
        raise ValueError(f"iterations must be >= 0, got {list(iterations)}")
    return counts


def _error_reduction(amplitudes, probe, counts: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, patches)`` after ``k`` error-reduction steps, for each ``k`` of the sorted ``counts``.

    One run serves every count: the patches after 5 steps are the start of steps 6 to 20.
    """
    amp = np.asarray(amplitudes, dtype=np.float64)
    probe = np.asarray(probe, dtype=np.complex128)
    if amp.ndim != 3 or amp.shape[1:] != probe.shape:
        raise ValueError(f"amplitudes must be (B, N, N) with the probe's N = {probe.shape}, "
                         f"got {amp.shape}")
    intensity = np.abs(probe) ** 2
    # Dividing by the probe, regularised where it is dark.
    inverse_probe = np.conj(probe) / (intensity + PROBE_REGULARISATION * intensity.max())
    probe_phase = np.exp(1j * np.angle(far_field(probe[None]).astype(np.complex128)))
    obj = _inverse_far_field(amp * probe_phase) * inverse_probe
    done = 0
    for k in counts:
        for _ in range(k - done):
            field = far_field(probe[None] * obj).astype(np.complex128)
            obj = _inverse_far_field(amp * np.exp(1j * np.angle(field))) * inverse_probe
        done = k
        yield k, obj


def backproject_patches(amplitudes, probe, iterations: int = 0) -> np.ndarray:
    """Object patches (B, N, N) complex128 from measured amplitudes (B, N, N) and the probe (N, N).

    ``iterations`` >= 0 single-pattern error-reduction steps follow the back-projection.
    """
    (_, obj), = _error_reduction(amplitudes, probe, _check_iterations([iterations]))
    return obj


def backprojection(path: str, iterations: Sequence[int] = (0, 5)) -> dict:
    """Stitched back-projection of the scan at ``path`` for each iteration count, with metrics.

    ``seconds`` of a row is the time of its own error-reduction steps and stitching, on top of
    the rows with fewer iterations.
    """
    counts = _check_iterations(iterations)
    data = load_npz(path)
    if data.object is None:
        raise ValueError(f"{path}: the back-projection baseline needs the ground truth "
                         f"(key 'objectGuess')")
    shape, N = data.object.shape, data.N
    weight = probe_weight(data.probe)
    stitchers = {k: Stitcher(shape, N, interpolation="fourier", pixel_weight=weight)
                 for k in counts}
    seconds = dict.fromkeys(counts, 0.0)
    for start in range(0, len(data.positions), BATCH):
        sl = slice(start, start + BATCH)
        t0 = time.perf_counter()
        for k, obj in _error_reduction(data.diffraction[sl], data.probe, counts):
            stitchers[k].add(obj, data.positions[sl])
            t1 = time.perf_counter()
            seconds[k] += t1 - t0
            t0 = t1
    mask = illumination_mask(data.probe, data.positions, shape)
    rows = []
    for k in counts:
        result = stitchers[k].result()
        metrics = evaluate_reconstruction(result.obj, data.object, mask=mask & result.scanned_mask)
        rows.append({"iterations": k, "amp_ssim": metrics["amp_ssim"],
                     "phase_ssim": metrics["phase_ssim"], "amp_psnr": metrics["amp_psnr"],
                     "phase_psnr": metrics["phase_psnr"], "seconds": seconds[k]})
    return {"data": str(path), "n_patterns": int(len(data.positions)), "N": int(N), "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.backprojection", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="simulated scan (.npz) with objectGuess, e.g. a held-out test.npz")
    p.add_argument("--iterations", type=int, nargs="+", default=[0, 5],
                   help="single-pattern error-reduction steps after the back-projection "
                        "(default: 0 5)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    try:
        result = backprojection(a.data, a.iterations)
    except ValueError as exc:
        p.error(str(exc))
    print(f"{result['data']}: {result['n_patterns']} patterns back-projected one by one, stitched")
    print(markdown_table(
        ["iterations", "amplitude SSIM", "phase SSIM", "amplitude PSNR [dB]", "phase PSNR [dB]",
         "seconds"],
        [[r["iterations"], f"{r['amp_ssim']:.3f}", f"{r['phase_ssim']:.3f}",
          f"{r['amp_psnr']:.1f}", f"{r['phase_psnr']:.1f}", f"{r['seconds']:.1f}"]
         for r in result["rows"]]))
    if a.json:
        atomic_write_json(a.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
