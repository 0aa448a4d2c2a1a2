"""Inference scaling curve: time-to-image and peak memory versus the number of patterns.

For each size M (e.g. 1k, 10k, 100k) a raster scan of M patterns (N = 64, 75% overlap, 1e6
photons) is simulated with the project's simulator and written *without* ``objectGuess`` (so the
inference CLI spends no time on metrics and the canvas is the scan's bounding box). A small model
(gridsize 1, trained for ``epochs`` on 64 groups of the smallest scan -- its quality is irrelevant
here) reconstructs every scan through the inference CLI on the CPU. Recorded per size: the CLI's
``total_s`` (time-to-image), patterns per second, and the peak RSS of the inference process.

Whether memory stays bounded is judged from the measurements: the least-squares slope of peak
RSS against M (MiB per 1000 patterns). The inference CLIs stream the scan
(``ptycho.data.stream``): the file is validated chunk by chunk and each batch's patterns are
read when it is predicted, so the diffraction data (16 KiB per pattern at N = 64) no longer
enter the slope. What remains is O(M) bookkeeping (positions, group indices) and the canvas:
the reconstructed object covers the scanned area, which grows with M. Sizes that were not run
are never reported as measured; an extrapolation to 100k from the fitted line is labelled as
such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from benchmarks.backends import infer_backend, train_backend
from benchmarks.evaluate import clean

__all__ = ["make_scaling_scan", "run_scaling", "fit_memory", "plot_scaling"]

TARGET_M = 100_000


def make_scaling_scan(M: int, path: Path, seed: int = 7) -> Path:
    """Simulate an M-pattern raster scan (N = 64) and save it without ``objectGuess``."""
    from ptycho.data.contract import PtychoData, load_npz, save_npz
    from ptycho.simulate import main as simulate_main

    path = Path(path)
    if path.is_file():
        return path
    full = path.with_name(path.stem + "_with_object.npz")
    rc = simulate_main(["--output", str(full), "--object", "lines", "--N", "64",
                        "--n-patterns", str(M), "--overlap", "0.75", "--nphotons", "1e6",
                        "--seed", str(seed), "--no-preview", "--no-compress", "--no-progress"])
    if rc != 0:
        raise RuntimeError(f"simulating the {M}-pattern scaling scan failed (exit {rc})")
    d = load_npz(full)
    save_npz(path, PtychoData(diffraction=d.diffraction, xcoords=d.xcoords, ycoords=d.ycoords,
                              probe=d.probe, source=str(path)))
    full.unlink()
    for extra in full.parent.glob(full.stem + "_simulation.json"):
        extra.unlink()
    return path


def fit_memory(sizes: Sequence[int], rss_mb: Sequence[float]) -> dict:
    """Least-squares line ``rss = a + b * M``: slope per 1000 patterns and the 100k value."""
    m = np.asarray(sizes, dtype=np.float64)
    r = np.asarray(rss_mb, dtype=np.float64)
    if len(m) < 2 or np.ptp(m) == 0:
        return {"slope_mb_per_1k": None, "intercept_mb": None, "rss_at_100k_mb": None}
    b, a = np.polyfit(m, r, 1)
    return {"slope_mb_per_1k": float(b * 1000), "intercept_mb": float(a),
            "rss_at_100k_mb": float(a + b * TARGET_M)}


def run_scaling(sizes: Sequence[int], backends: Sequence[str], work: Path, *, threads: int,
                epochs: int = 1, timeout_s: Optional[float] = None, log=print) -> dict:
    """Run the scaling curve for every backend; returns per-size results and memory fits."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(s) for s in sizes)
    scans = {}
    for M in sizes:
        log(f"scaling: simulating {M} patterns")
        scans[M] = make_scaling_scan(M, work / f"scan_{M}.npz")
    out: dict = {"sizes": sizes, "backends": {}, "threads": threads}
    for backend in backends:
        log(f"scaling: training the small {backend} model ({epochs} epoch)")
        tr = train_backend(backend, scans[sizes[0]], work / f"{backend}_model", gridsize=1,
                           epochs=epochs, batch_size=16, validation_fraction=0.125,
                           n_train_patterns=min(sizes[0], 64), threads=threads,
                           timeout_s=timeout_s, n_groups=min(sizes[0], 64))
        rows = []
        for M in sizes:
            log(f"scaling: {backend} inference on {M} patterns")
            r = infer_backend(backend, tr["model_dir"], scans[M], work / f"{backend}_inf_{M}",
                              threads=threads, timeout_s=timeout_s)
            rows.append({"M": M, "time_to_image_s": r["time_to_image_s"],
                         "patterns_per_s": r["patterns_per_s"],
                         "peak_rss_mb": r["process_peak_rss_mb"],
                         "cli_peak_rss_mb": r["timing"].get("peak_rss_mb"),
                         "process_wall_s": r["process_wall_s"]})
            (work / f"{backend}_inf_{M}" / "reconstruction.npz").unlink(missing_ok=True)
        fit = fit_memory([r["M"] for r in rows], [r["peak_rss_mb"] for r in rows])
        measured_100k = next((r for r in rows if r["M"] == TARGET_M), None)
        out["backends"][backend] = {"rows": rows, "memory_fit": fit,
                                    "measured_100k": measured_100k is not None}
    return clean(out)


def plot_scaling(result: dict, path: Path) -> Path:
    """Two panels (time-to-image, peak RSS vs patterns, log-log) written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ptycho.atomic import atomic_write_bytes

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for backend, info in result["backends"].items():
        rows = info["rows"]
        M = [r["M"] for r in rows]
        ax1.loglog(M, [r["time_to_image_s"] for r in rows], "o-", label=backend)
        ax2.loglog(M, [r["peak_rss_mb"] / 1024 for r in rows], "o-", label=backend)
        fit = info["memory_fit"]
        if not info["measured_100k"] and fit.get("rss_at_100k_mb"):
            ax2.loglog([M[-1], TARGET_M], [rows[-1]["peak_rss_mb"] / 1024,
                                           fit["rss_at_100k_mb"] / 1024], ":", color="grey",
                       label=f"{backend}: linear extrapolation (not measured)")
    ax2.axhline(4.0, color="red", lw=0.8, ls="--", label="target 4 GB")
    ax1.set(xlabel="patterns (N=64)", ylabel="time-to-image (s)",
            title="Inference time-to-image (CPU)")
    ax2.set(xlabel="patterns (N=64)", ylabel="peak RSS (GiB)", title="Inference peak memory")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
