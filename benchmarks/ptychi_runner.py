"""Reconstruct one scan with Pty-chi (ePIE, rPIE, LSQML) and a known probe; record wall times.

This script runs INSIDE the separate Pty-chi environment (``benchmarks/.venv-ptychi``, made by
``benchmarks/setup_ptychi_env.sh``), as a subprocess of the benchmark harness. It must not import
``ptycho``: it reads the data-contract NPZ directly with NumPy.

Conversion from the data contract to Pty-chi's conventions (checked against the installed
Pty-chi source and on simulated scans by ``benchmarks.ptychi_bridge``):

* Diffraction: the file stores amplitudes ``sqrt(counts)`` with the zero frequency at pixel
  ``(N//2, N//2)``. Pty-chi wants intensities as a detector records them (zero frequency
  centred) and ``fftshift``s them itself (``data_options.fft_shift=True``). We pass
  ``counts = amplitude**2``.
* Far field: Pty-chi's far-field propagator is the unnormalised ``fft2`` (no ``fftshift`` of the
  prediction), ours the unitary ``fftshift(fft2(., norm="ortho"))``, so ``|fft2(psi)|**2 =
  N**2 |F_ortho(psi)|**2``. Expected counts in the contract are
  ``(sqrt(nphotons)/(N/2) * |F_ortho(P O)|)**2`` with ``P`` the stored, normalised probe, hence
  Pty-chi's probe is ``P * sqrt(nphotons) / (N/2) / N``.
* Positions: ours are patch centres ``(y, x)`` in object pixels with the patch starting at
  ``y - N/2``. Pty-chi's patch starts at ``origin + p - (N-1)/2``. With
  ``determine_position_origin_coords_by=SPECIFIED`` and ``position_origin_coords=(-0.5, -0.5)``,
  passing our positions unchanged gives the same patch, and the object buffer (initialised to
  ones, the shape of ``objectGuess``) is pixel-for-pixel the frame of the ground truth.
* Known probe: the probe, the positions and the probe power are not refined
  (``probe_options.optimizable=False``; the object-probe ambiguity removal and LSQML's first-epoch
  probe rescaling are switched off, because both rescale the probe).

Usage::

    .venv-ptychi/bin/python benchmarks/ptychi_runner.py --data scan.npz --nphotons 1e9 \\
        --output result.npz --algorithms epie rpie lsqml --iterations 50 100 200

Writes ``result.npz`` (``{alg}_{iters}``: complex64 (H, W) object after that many iterations) and
``result.json`` (wall seconds per checkpoint, setup seconds, versions, the options used). Each
algorithm runs once up to the largest iteration count; the object is copied out at every
checkpoint, so ``time_s[alg][iters]`` is the cumulative reconstruction time to that point.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ALGORITHMS = ("epie", "rpie", "lsqml")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_scan(path: str) -> dict:
    """Read the contract keys needed here; raise ValueError naming the file and key."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{path}: no such data file")
    with np.load(p, allow_pickle=False) as z:
        keys = set(z.files)
        diff_key = "diff3d" if "diff3d" in keys else "diffraction" if "diffraction" in keys else None
        for key in (diff_key, "xcoords", "ycoords", "probeGuess", "objectGuess"):
            if key is None or key not in keys:
                raise ValueError(f"{path}: missing key {key or 'diff3d'!r} (keys: {sorted(keys)})")
        amp = np.asarray(z[diff_key])
        out = {"diffraction": amp, "xcoords": np.asarray(z["xcoords"], np.float64),
               "ycoords": np.asarray(z["ycoords"], np.float64),
               "probe": np.asarray(z["probeGuess"]), "object": np.asarray(z["objectGuess"])}
    if amp.ndim != 3 or amp.shape[1] != amp.shape[2]:
        raise ValueError(f"{path}: key {diff_key!r} must be (M, N, N), got shape {amp.shape}")
    M, N = amp.shape[0], amp.shape[1]
    if out["probe"].shape != (N, N):
        raise ValueError(f"{path}: key 'probeGuess' must be ({N}, {N}), got {out['probe'].shape}")
    for key in ("xcoords", "ycoords"):
        if out[key].shape != (M,):
            raise ValueError(f"{path}: key {key!r} must have shape ({M},), got {out[key].shape}")
    if not np.all(np.isfinite(amp)) or np.any(amp < 0):
        raise ValueError(f"{path}: key {diff_key!r} holds NaN/Inf or negative amplitudes")
    return out


def ptychi_probe(probe: np.ndarray, nphotons: float) -> np.ndarray:
    """The contract probe scaled for Pty-chi's unnormalised FFT: ``P sqrt(nphotons)/(N/2)/N``.

    The contract probe is normalised so that ``sum |P|**2 = (N/2)**2``; it is renormalised here
    (a no-op for simulator output) so that the dose alone sets the scale. Returns complex64
    (1, 1, N, N) (OPR modes, incoherent modes, rows, cols).
    """
    P = np.asarray(probe, dtype=np.complex128)
    N = P.shape[-1]
    power = float(np.sum(np.abs(P) ** 2))
    if not power > 0:
        raise ValueError("probeGuess is all zeros")
    P = P * ((N / 2.0) / math.sqrt(power))
    P = P * (math.sqrt(float(nphotons)) / (N / 2.0) / N)
    return P.astype(np.complex64)[None, None]


def batch_size_for(alg: str, batch_size: int, M: int) -> int:
    """Minibatch size of one algorithm.

    Pty-chi's PIE engines sum the updates of every pattern of a minibatch. At 75% overlap
    about 12 patterns cover a pixel, so a batch of M/4 adds about three full-step updates per
    pixel; on 128-pattern scans both ePIE (alpha 1) and rPIE (alpha 0.1) then overshoot and
    diverge to NaN, while batches of M/8 converged in our tests (and M/16 is twice as slow).
    The PIE engines therefore use batches of M/8, at most ``batch_size``. LSQML solves its
    step length and uses ``batch_size``.
    """
    if alg in ("epie", "rpie"):
        return max(1, min(batch_size, M // 8))
    return max(1, min(batch_size, M))


def build_options(alg: str, n_epochs: int, batch_size: int, seed: int, lsqml_noise: str):
    """Pty-chi options for one algorithm (see the module doc for every convention)."""
    import ptychi.api as api

    if alg == "epie":
        opts = api.EPIEOptions()
        opts.object_options.alpha = 1.0
        opts.object_options.step_size = 1.0
    elif alg == "rpie":
        opts = api.RPIEOptions()
        opts.object_options.alpha = 0.1
        opts.object_options.step_size = 1.0
    elif alg == "lsqml":
        opts = api.LSQMLOptions()
        opts.object_options.step_size = 1.0
        opts.reconstructor_options.noise_model = getattr(api.NoiseModels, lsqml_noise.upper())
        opts.reconstructor_options.rescale_probe_intensity_in_first_epoch = False
    else:
        raise ValueError(f"unknown algorithm {alg!r}; expected one of {ALGORITHMS}")
    opts.data_options.fft_shift = True
    opts.object_options.optimizable = True
    opts.object_options.optimizer = api.Optimizers.SGD
    opts.object_options.determine_position_origin_coords_by = (
        api.ObjectPosOriginCoordsMethods.SPECIFIED)
    opts.object_options.position_origin_coords = np.array([-0.5, -0.5])
    opts.object_options.remove_object_probe_ambiguity.enabled = False
    opts.probe_options.optimizable = False
    opts.probe_position_options.optimizable = False
    opts.reconstructor_options.num_epochs = n_epochs
    opts.reconstructor_options.batch_size = batch_size
    opts.reconstructor_options.default_device = api.Devices.CPU
    opts.reconstructor_options.random_seed = seed
    return opts


def make_task(alg: str, scan: dict, nphotons: float, n_epochs: int, batch_size: int, seed: int,
              lsqml_noise: str):
    """A ``PtychographyTask``: counts, an all-ones object of the truth's shape, the scaled known
    probe and our positions (see the module doc)."""
    import torch
    from ptychi.api.task import PtychographyTask

    counts = np.square(scan["diffraction"].astype(np.float32))
    H, W = scan["object"].shape
    return PtychographyTask(
        build_options(alg, n_epochs, batch_size, seed, lsqml_noise),
        diffraction_data=counts,
        object_data=torch.ones((1, H, W), dtype=torch.complex64),
        probe_data=ptychi_probe(scan["probe"], nphotons),
        probe_position_x_px=scan["xcoords"], probe_position_y_px=scan["ycoords"])


def run(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    import importlib.metadata as md

    scan = load_scan(args.data)
    iters = sorted(set(args.iterations))
    if iters[0] < 1:
        raise ValueError(f"--iterations must be >= 1, got {iters}")
    objects: dict[str, np.ndarray] = {}
    report = {"data": str(args.data), "M": int(scan["diffraction"].shape[0]),
              "N": int(scan["diffraction"].shape[1]), "object_shape": list(scan["object"].shape),
              "nphotons": args.nphotons, "batch_size": args.batch_size, "threads": args.threads,
              "lsqml_noise_model": args.lsqml_noise, "iterations": iters,
              "versions": {"ptychi": md.version("ptychi"), "torch": torch.__version__,
                           "numpy": np.__version__, "python": sys.version.split()[0]},
              "device": "cpu", "algorithms": {}}
    for alg in args.algorithms:
        t0 = time.perf_counter()
        task = make_task(alg, scan, args.nphotons, iters[-1],
                         batch_size_for(alg, args.batch_size, report["M"]), args.seed,
                         args.lsqml_noise)
        setup = time.perf_counter() - t0
        times, done, elapsed, diverged = {}, 0, 0.0, None
        for target in iters:
            t1 = time.perf_counter()
            task.run(target - done)
            elapsed += time.perf_counter() - t1
            done = target
            obj = task.get_data_to_cpu("object", as_numpy=True)[0]
            if not np.all(np.isfinite(obj)):
                diverged = target
                print(f"ptychi_runner: {alg} diverged (NaN/Inf) by {target} iterations",
                      flush=True)
                break
            objects[f"{alg}_{target}"] = obj.astype(np.complex64)
            times[str(target)] = elapsed
            print(f"ptychi_runner: {alg} {target} iterations: {elapsed:.2f} s", flush=True)
        report["algorithms"][alg] = {"setup_s": setup, "time_s": times,
                                     "batch_size": batch_size_for(alg, args.batch_size,
                                                                  report["M"]),
                                     "diverged_at": diverged}
        del task
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = Path(args.output)
    _atomic_write(out, lambda fh: np.savez(fh, **objects))
    _atomic_write(out.with_suffix(".json"),
                  lambda fh: fh.write(json.dumps(report, indent=2).encode()))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Pty-chi reference reconstructions for the benchmark")
    p.add_argument("--data", required=True, help="data-contract NPZ (needs objectGuess)")
    p.add_argument("--nphotons", type=float, required=True,
                   help="incident photons per pattern used to simulate the data (> 0)")
    p.add_argument("--output", required=True, help="output .npz (a .json is written beside it)")
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    p.add_argument("--iterations", nargs="+", type=int, default=[50, 100, 200])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lsqml-noise", choices=("gaussian", "poisson"), default="gaussian")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.nphotons > 0 and math.isfinite(args.nphotons)):
        print(f"ptychi_runner: --nphotons must be > 0, got {args.nphotons}", file=sys.stderr)
        return 2
    try:
        run(args)
    except ValueError as exc:
        print(f"ptychi_runner: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
