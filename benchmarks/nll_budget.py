"""How much of the Poisson likelihood each part of the object carries (NumPy only).

For a simulated scan with ground truth, the true object patches are pushed through the forward
model (probe illumination, unitary far field, counts ``lam = c * s**2 * |F|**2``), and the
per-pattern Poisson NLL (``ptycho.physics.poisson_nll``, without ``log K!``) is compared with
that of degraded objects: flat amplitude with the true phase, the true amplitude with zero
phase, both flat, and a blurred amplitude. ``c`` is the least-squares global count factor of
each candidate (the network can always learn a global amplitude factor), so only structure is
compared. The differences are what a model gains by learning that part of the object: a part
worth little likelihood is learned last by gradient descent.

    python -m benchmarks.nll_budget DATA.npz [--n-patterns 256] [--json OUT.json]
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ptycho import physics
from benchmarks.report import markdown_table
from ptycho.atomic import atomic_write_json
from ptycho.data.contract import load_npz
from ptycho.payload import DataStatistics
from ptycho.probe import normalize_probe

__all__ = ["candidate_objects", "nll_per_pattern", "nll_budget", "main"]


def candidate_objects(patches: np.ndarray, blur_sigma: float = 2.0) -> dict[str, np.ndarray]:
    """Degraded versions of ``patches`` (M, N, N) complex, keyed by description."""
    amp, phase = np.abs(patches), np.angle(patches)
    blurred = ndimage.gaussian_filter(amp, (0, blur_sigma, blur_sigma))
    return {
        "true object": patches,
        "flat amplitude, true phase": np.exp(1j * phase),
        "true amplitude, zero phase": amp.astype(np.complex128),
        "flat amplitude, zero phase": np.ones_like(patches),
        f"amplitude blurred (sigma {blur_sigma:g} px), true phase": blurred * np.exp(1j * phase),
    }


def nll_per_pattern(patches: np.ndarray, probe: np.ndarray, counts: np.ndarray,
                    intensity_scale: float) -> tuple[float, float]:
    """(mean per-pattern Poisson NLL, global count factor c) of object ``patches``."""
    amplitude = physics.diffraction_amplitude(patches, probe).astype(np.float64)
    lam = intensity_scale ** 2 * amplitude ** 2
    c = float(counts.sum() / lam.sum())
    nll = physics.poisson_nll(c * lam, counts).sum(axis=(-2, -1))
    return float(nll.mean()), c


def nll_budget(path: str, n_patterns: Optional[int] = 256) -> dict:
    """NLL of every candidate object on the first ``n_patterns`` patterns of the scan at ``path``."""
    data = load_npz(path)
    if data.object is None:
        raise ValueError(f"{path}: the NLL budget needs the ground truth (key 'objectGuess')")
    m = data.M if n_patterns is None else min(int(n_patterns), data.M)
    stats = DataStatistics.from_amplitudes(data.diffraction)
    counts = data.diffraction[:m].astype(np.float64) ** 2
    patches = physics.extract_patches(data.object, data.positions[:m], data.N,
                                      interpolation="fourier").astype(np.complex128)
    probe = normalize_probe(np.asarray(data.probe, dtype=np.complex128))
    rows = []
    for name, obj in candidate_objects(patches).items():
        nll, c = nll_per_pattern(obj, probe, counts, stats.intensity_scale)
        rows.append({"object": name, "nll_per_pattern": nll, "count_factor": c})
    base = rows[0]["nll_per_pattern"]
    for r in rows:
        r["nll_above_truth"] = r["nll_per_pattern"] - base
    return {"data": str(path), "n_patterns": m, "mean_photons": stats.mean_photons, "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nll_budget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="simulated scan (.npz) with objectGuess")
    p.add_argument("--n-patterns", type=int, default=256, help="patterns used (default: 256)")
    p.add_argument("--json", default=None, help="also write the table to this JSON file")
    a = p.parse_args(argv)
    result = nll_budget(a.data, a.n_patterns)
    print(f"{result['data']}: {result['n_patterns']} patterns, "
          f"{result['mean_photons']:.4g} photons per pattern")
    print(markdown_table(
        ["object", "NLL per pattern", "above the true object", "count factor"],
        [[r["object"], f"{r['nll_per_pattern']:.7g}", f"{r['nll_above_truth']:.4g}",
          f"{r['count_factor']:.3f}"] for r in result["rows"]]))
    if a.json:
        atomic_write_json(a.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
