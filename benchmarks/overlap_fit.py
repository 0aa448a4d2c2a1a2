"""Is the object determined by one diffraction pattern, or only by overlapping ones?

For a simulated scan with ground truth, the object region under the ``k`` patterns nearest to
one scan position is fitted directly -- no network: the complex canvas
``O = c * exp(a + i*phi)`` (``a``, ``phi`` free per pixel, ``c`` from the measured photons) is
optimised from a flat start with Adam on the summed Poisson NLL of those ``k`` patterns, using
the PyTorch physics (``ptycho_torch.helper``: Fourier sub-pixel extraction, probe illumination,
unitary far field). The fit is then compared with the truth on the bright part of the centre
pattern's probe (intensity >= 10 % of its maximum), after removing the global phase, by the
correlation coefficient of amplitude and of phase, and its NLL with that of the true object.

``k = 1`` is what a gridsize-1 network sees per pattern; ``k = 4`` is one gridsize-2 group. If
the amplitude correlation stays low at ``k = 1`` while the NLL is already close to the truth's,
the single pattern does not pin the amplitude down, and no gridsize-1 training can.

    python -m benchmarks.overlap_fit DATA.npz [--k 1 4 9] [--steps 4000] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import math
from typing import Optional, Sequence

import numpy as np

from benchmarks.report import markdown_table
from ptycho.atomic import atomic_write_json
from ptycho.data.contract import load_npz
from ptycho.physics import window_margin

__all__ = ["fit_region", "overlap_fit", "main"]

BRIGHT_FRACTION = 0.1


def _correlations(rec: np.ndarray, truth: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """(amplitude, phase) correlation of two (N, N) complex patches where ``weight`` is bright."""
    bright = weight >= BRIGHT_FRACTION * weight.max()
    offset = np.angle(np.sum(weight * rec * np.conj(truth)))
    amp = np.corrcoef(np.abs(rec)[bright], np.abs(truth)[bright])[0, 1]
    phase = np.corrcoef(np.angle(rec * np.exp(-1j * offset))[bright],
                        np.angle(truth)[bright])[0, 1]
    return float(amp), float(phase)


def fit_region(data, centre: int, k: int, steps: int = 4000, lr: float = 0.02,
               report_every: Optional[int] = None) -> dict:
    """Fit the canvas under the ``k`` patterns nearest to pattern ``centre`` (see module doc).

    Returns the final amplitude / phase correlations with the truth on the centre pattern's
    bright probe area, the mean per-pattern NLL of the fit and of the true object (same
    physics, without ``log K!``), and, with ``report_every``, the correlations along the way.
    """
    import torch

    from ptycho_torch import helper

    N = data.N
    pos = data.positions
    order = np.argsort(np.hypot(*(pos - pos[centre]).T), kind="stable")[:k]
    # The canvas covers every Fourier extraction window, clipped to the object.
    margin = N // 2 + window_margin(N, "fourier") + 1
    top = np.maximum(np.floor(pos[order].min(axis=0)).astype(int) - margin, 0)
    end = np.minimum(np.ceil(pos[order].max(axis=0)).astype(int) + margin, data.object.shape)
    shape = tuple(int(v) for v in end - top)
    rel = torch.from_numpy(pos[order] - top)
    counts = torch.from_numpy(data.diffraction[order].astype(np.float64) ** 2)
    probe = torch.from_numpy(np.asarray(data.probe, dtype=np.complex128))
    weight = np.abs(np.asarray(data.probe)) ** 2
    c = math.sqrt(float(counts.sum()) / k / float(weight.sum()))
    truth_canvas = torch.from_numpy(np.asarray(
        data.object[top[0]:end[0], top[1]:end[1]], dtype=np.complex128))

    def nll(canvas: "torch.Tensor") -> "torch.Tensor":
        patches = helper.extract_patches(canvas, rel, N, interpolation="fourier")
        lam = helper.diffraction_amplitude(patches, probe) ** 2
        return helper.poisson_nll(lam, counts).sum(dim=(-2, -1)).mean()

    truth_patch = helper.extract_patches(truth_canvas, rel[:1], N, "fourier")[0].numpy()
    with torch.no_grad():
        t_scale = torch.sqrt(counts.sum() / (helper.diffraction_amplitude(
            helper.extract_patches(truth_canvas, rel, N, "fourier"), probe) ** 2).sum())
        truth_nll = float(nll(truth_canvas * t_scale))
    a = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    phi = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([a, phi], lr=lr)
    trajectory = []

    def snapshot(step: int, loss: float) -> dict:
        with torch.no_grad():
            canvas = c * torch.exp(a + 1j * phi)
            rec = helper.extract_patches(canvas, rel[:1], N, "fourier")[0].numpy()
        amp, ph = _correlations(rec, truth_patch, weight)
        return {"step": step, "amplitude_corr": amp, "phase_corr": ph,
                "nll_above_truth": loss - truth_nll}

    loss = float("nan")
    for step in range(1, steps + 1):
        value = nll(c * torch.exp(a + 1j * phi))
        opt.zero_grad()
        value.backward()
        opt.step()
        loss = float(value.detach())
        if report_every and step % report_every == 0 and step != steps:
            trajectory.append(snapshot(step, loss))
    final = snapshot(steps, float(nll(c * torch.exp(a + 1j * phi)).detach()))
    return {"k": k, "centre": int(centre), "steps": steps, **{key: final[key] for key in
            ("amplitude_corr", "phase_corr", "nll_above_truth")},
            "truth_nll_per_pattern": truth_nll, "trajectory": trajectory}


def overlap_fit(path: str, ks: Sequence[int] = (1, 4, 9), centre: Optional[int] = None,
                steps: int = 4000, report_every: Optional[int] = None) -> dict:
    """``fit_region`` for every ``k`` in ``ks`` around one pattern (default: the median one)."""
    data = load_npz(path)
    if data.object is None:
        raise ValueError(f"{path}: the overlap fit needs the ground truth (key 'objectGuess')")
    if centre is None:
        d = np.hypot(*(data.positions - np.median(data.positions, axis=0)).T)
        centre = int(np.argmin(d))
    if not 0 <= centre < data.M:
        raise ValueError(f"--centre must be a pattern index in 0..{data.M - 1}, got {centre}")
    bad = [k for k in ks if not 1 <= k <= data.M]
    if bad:
        raise ValueError(f"--k values must be in 1..{data.M} patterns, got {bad}")
    rows = [fit_region(data, centre, int(k), steps=steps, report_every=report_every) for k in ks]
    return {"data": str(path), "centre": centre, "steps": steps, "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.overlap_fit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="simulated scan (.npz) with objectGuess")
    p.add_argument("--k", type=int, nargs="+", default=[1, 4, 9],
                   help="numbers of nearest patterns fitted jointly (default: 1 4 9)")
    p.add_argument("--centre", type=int, default=None,
                   help="index of the centre pattern (default: the one nearest the scan's median)")
    p.add_argument("--steps", type=int, default=4000, help="Adam steps per fit (default: 4000)")
    p.add_argument("--report-every", type=int, default=None,
                   help="also record the correlations every this many steps")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    try:
        result = overlap_fit(a.data, a.k, a.centre, a.steps, a.report_every)
    except ValueError as exc:
        p.error(str(exc))
    print(f"{result['data']}: patterns nearest to pattern {result['centre']}, "
          f"{result['steps']} Adam steps from a flat object")
    print(markdown_table(
        ["patterns fitted", "step", "amplitude corr", "phase corr", "NLL above truth per pattern"],
        [[r["k"], s["step"] if "step" in s else r["steps"], f"{s['amplitude_corr']:.3f}",
          f"{s['phase_corr']:.3f}", f"{s['nll_above_truth']:.4g}"]
         for r in result["rows"] for s in [*r["trajectory"], r]]))
    if a.json:
        atomic_write_json(a.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
