"""Simulate ptychographic scans and write them in the NPZ data contract.

Forward model (the contract's convention, see ``ptycho.physics`` and ``ptycho.probe``):

1. ``P = normalize_probe(probe)`` so that ``sum |P|**2 = (N/2)**2``.
2. For each scan position (patch centre ``(y, x)`` in object pixels), the object patch
   ``O_m = extract_patches(obj, positions, N, interpolation)`` (sub-pixel positions by Fourier
   interpolation by default: the generated objects are band-limited, so it is accurate).
3. Expected counts ``lam = (s * |far_field(P * O_m)|)**2`` with ``s = sqrt(nphotons) / (N/2)``.
   A fully transparent object (``|O| = 1``) thus puts exactly ``nphotons`` photons into each
   pattern; ``nphotons`` is the incident dose per pattern.
4. Counts ``K ~ Poisson(lam)`` (or ``K = lam`` with ``noise=False``); stored amplitude
   ``sqrt(K)`` as float32.

Randomness: one ``numpy.random.SeedSequence(seed)`` is split into independent streams for the
object, the scan (jitter, random positions) and the photon noise of each output file, so a
seed fixes every output bit for bit, and e.g. changing the noise never changes the object.

CLI: ``python -m ptycho.simulate --output data.npz`` (see ``--help`` and ``datasets/README.md``).
"""

from __future__ import annotations

import argparse
import math
import sys
import zipfile
from pathlib import Path

import numpy as np

from ptycho.objects import (DEFAULT_AMPLITUDE_RANGE, DEFAULT_FEATURE_DENSITY,
                            DEFAULT_LINE_LENGTH_RANGE, DEFAULT_PHASE_RANGE, OBJECT_KINDS,
                            effective_feature_density, make_object)
from ptycho.scan import (SCAN_KINDS, make_scan, place_scan, probe_diameter, required_size,
                         scan_extent, step_from_overlap)

__all__ = ["simulate_scan", "build_parser", "main", "DEFAULT_OVERLAP", "SCAN_MARGIN"]

DEFAULT_OVERLAP = 0.75
SCAN_MARGIN = 2
"""Pixels kept free between every patch and the edge of its object region."""

_CHUNK = 256


def _probe_from_npz(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--probe file {path!r} does not exist or is not a file")
    if not zipfile.is_zipfile(p):
        raise ValueError(f"--probe file {path!r} is not an NPZ archive (expected a .npz file "
                         "written by numpy.savez with the key 'probeGuess')")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "probeGuess" not in z.files:
                raise ValueError(f"--probe file {path!r} has no key 'probeGuess' "
                                 f"(keys: {sorted(z.files)})")
            probe = np.asarray(z["probeGuess"])
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot read --probe file {path!r} as NPZ: {exc}") from exc
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise ValueError(f"{path!r}: key 'probeGuess' must be a square (N, N) array, "
                         f"got shape {probe.shape}")
    return probe


def simulate_scan(obj, probe, positions, nphotons: float, rng: np.random.Generator,
                  noise: bool = True, *, interpolation: str = "fourier",
                  progress: bool = False):
    """Simulate the diffraction of one scan; returns a validated ``PtychoData``.

    Parameters
    ----------
    obj : (H, W) complex object (transmission function).
    probe : (N, N) complex probe; it is normalised with ``normalize_probe`` and the normalised
        probe is what the returned data holds as ``probeGuess``.
    positions : (M, 2) float ``(y, x)`` patch centres in object pixels; every patch must lie
        inside the object (checked by the data contract).
    nphotons : photons per pattern for a fully transparent object (> 0).
    rng : ``numpy.random.Generator`` for the Poisson noise (not used when ``noise=False``).
    noise : draw Poisson counts; ``False`` stores the noise-free ``sqrt(expected counts)``.
    interpolation : sub-pixel patch extraction, ``"fourier"`` (default) or ``"bilinear"``.
    progress : show a tqdm progress bar over chunks of patterns.

    Returns ``PtychoData`` with diffraction (M, N, N) float32 amplitudes, positions, the
    normalised probe and ``object = obj`` (complex64).
    """
    from ptycho.data.contract import PtychoData
    from ptycho.physics import diffraction_amplitude, extract_patches, poisson_sample
    from ptycho.probe import normalize_probe

    o = np.asarray(obj)
    if o.ndim != 2:
        raise ValueError(f"obj must be a 2-D (H, W) array, got shape {o.shape}")
    if not np.all(np.isfinite(o)):
        raise ValueError("obj contains NaN or Inf")
    P = normalize_probe(probe)
    N = P.shape[0]
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise ValueError(f"positions must have shape (M, 2) with M >= 1, got {pos.shape}")
    if not (isinstance(nphotons, (int, float, np.floating, np.integer))
            and math.isfinite(nphotons) and nphotons > 0):
        raise ValueError(f"nphotons must be a finite number > 0, got {nphotons!r}")
    if noise and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    scale = math.sqrt(float(nphotons)) / (N / 2.0)
    obj128 = o.astype(np.complex128)
    P128 = P.astype(np.complex128)
    M = pos.shape[0]
    amp = np.empty((M, N, N), dtype=np.float32)
    starts = range(0, M, _CHUNK)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, total=math.ceil(M / _CHUNK), desc="simulating", unit="chunk")
    for s in starts:
        e = min(M, s + _CHUNK)
        patches = extract_patches(obj128, pos[s:e], N, interpolation)
        expected = (scale * diffraction_amplitude(patches, P128)) ** 2
        counts = poisson_sample(expected, rng) if noise else expected
        amp[s:e] = np.sqrt(counts)
    empty = int(np.count_nonzero(~amp.reshape(M, -1).any(axis=1)))
    if empty:
        raise ValueError(f"nphotons {float(nphotons):.3g} is too low: {empty} of {M} simulated "
                         "patterns recorded no photon, and an empty pattern carries no "
                         "information (the data contract refuses them); raise nphotons")
    return PtychoData(diffraction=amp, xcoords=pos[:, 1].copy(), ycoords=pos[:, 0].copy(),
                      probe=P, object=o.astype(np.complex64))


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

class _BoolFlag(argparse.Action):
    """``--flag`` / ``--no-flag`` (also ``--no_flag``) boolean switch, never ``type=bool``."""

    def __init__(self, option_strings, dest, default=None, help=None):
        strings = list(option_strings)
        for opt in option_strings:
            stem = opt[2:]
            for neg in (f"--no-{stem}", f"--no_{stem.replace('-', '_')}"):
                if neg not in strings:
                    strings.append(neg)
        super().__init__(strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith(("--no-", "--no_")))

    def format_usage(self):
        return " | ".join(self.option_strings)


def _add(parser, name: str, **kwargs):
    """Add ``--name`` and, for dashed names, the ``--name_with_underscores`` spelling too."""
    flags = [f"--{name}"]
    if "-" in name:
        flags.append(f"--{name.replace('-', '_')}")
    if kwargs.get("action") is argparse.BooleanOptionalAction:
        kwargs["action"] = _BoolFlag
    kwargs.setdefault("dest", name.replace("-", "_"))
    return parser.add_argument(*flags, **kwargs)


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer side or HxW, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive side or HxW, got {text!r}")
    return vals[0], vals[1]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` (``none`` for None) unless the help already names it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.required:
            return text
        if action.default is None:
            return text + " (default: none)"
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ptycho.simulate`` argument parser (every dashed flag also as ``--a_b``)."""
    p = argparse.ArgumentParser(
        prog="python -m ptycho.simulate",
        description="Simulate a ptychographic scan (object, probe, scan pattern, Poisson photon "
                    "counts) and write it as an NPZ file of the data contract.",
        formatter_class=_HelpFormatter)
    _add(p, "output", required=True,
         help="output .npz file; with --split, a directory that receives train.npz and test.npz")
    _add(p, "object", default="lines",
         help=f"object generator: one of {', '.join(OBJECT_KINDS)} (any greyscale/RGB image file)")
    _add(p, "phase-image", default=None,
         help="with --object image:PATH, take the phase from this second image file")
    _add(p, "N", type=int, default=None,
         help="diffraction pattern / patch side in pixels (even); default 64, or the side of --probe")
    p.add_argument("--n-patterns", "--n_patterns", "--n-images", "--n_images", dest="n_patterns",
                   type=int, default=512, help="number of diffraction patterns per output file")
    _add(p, "object-size", type=_parse_size, default=None,
         help="object side S or HxW in pixels; default: just large enough for the scan")
    _add(p, "scan", choices=SCAN_KINDS, default="raster", help="scan pattern")
    _add(p, "overlap", type=float, default=None,
         help=f"linear overlap fraction of the probe diameter (0 <= f < 1), step = (1 - f) * "
              f"diameter; default {DEFAULT_OVERLAP} unless --step is given")
    _add(p, "step", type=float, default=None,
         help="scan step in pixels (instead of --overlap)")
    _add(p, "jitter", type=float, default=0.5,
         help="uniform random offset in [-jitter, jitter] pixels added to each coordinate")
    _add(p, "nphotons", type=float, default=1e6,
         help="photons per pattern for a fully transparent object (incident dose per pattern)")
    _add(p, "seed", type=int, default=0, help="random seed (fixes every output bit)")
    _add(p, "probe", default=None,
         help="NPZ file whose key 'probeGuess' (N, N) is the probe; default: the library's "
              "default disk probe of diameter N/3")
    _add(p, "split", choices=("none", "region", "objects"), default="none",
         help="'none': one file; 'region': one object, left half scanned into train.npz, "
              "right half into "
              "test.npz (patch footprints never overlap); 'objects': two objects from different "
              "seeds")
    _add(p, "noise", action=argparse.BooleanOptionalAction, default=True,
         help="draw Poisson photon counts (--no-noise stores the expected counts)")
    _add(p, "preview", action=argparse.BooleanOptionalAction, default=True,
         help="write a preview PNG beside each output file")
    _add(p, "smoothing", type=float, default=1.0,
         help="Gaussian band-limit sigma of the object patterns in pixels (0 = off)")
    _add(p, "correlation-length", type=float, default=4.0,
         help="grf object: correlation length (filter sigma) in pixels")
    _add(p, "feature-density", type=float, default=None,
         help="lines / points objects: segments / scatterers per pixel of object area "
              "(lines: segments {:g}-{:g} px long); default ".format(*DEFAULT_LINE_LENGTH_RANGE)
              + ", ".join(f"{k} 1/{1 / v:g}" for k, v in DEFAULT_FEATURE_DENSITY.items()))
    _add(p, "amplitude-range", type=float, nargs=2, metavar=("LO", "HI"),
         default=list(DEFAULT_AMPLITUDE_RANGE), help="object amplitude range")
    _add(p, "phase-range", type=float, nargs=2, metavar=("LO", "HI"),
         default=list(DEFAULT_PHASE_RANGE),
         help="object phase range in radians (default: -pi/2 pi/2)")
    _add(p, "interpolation", choices=("fourier", "bilinear"), default="fourier",
         help="sub-pixel patch extraction")
    _add(p, "compress", action=argparse.BooleanOptionalAction, default=True,
         help="write compressed NPZ (zlib)")
    _add(p, "progress", action=argparse.BooleanOptionalAction, default=None,
         help="progress bar on stderr (default: on for more than 2048 patterns)")
    return p


def _validate_args(a: argparse.Namespace) -> None:
    if a.N is not None and (a.N < 8 or a.N % 2):
        raise ValueError(f"--N must be an even integer >= 8, got {a.N}")
    if a.n_patterns < 1:
        raise ValueError(f"--n-patterns must be >= 1, got {a.n_patterns}")
    if a.overlap is not None and a.step is not None:
        raise ValueError("give either --overlap or --step, not both")
    if a.overlap is not None and not (0.0 <= a.overlap < 1.0):
        raise ValueError(f"--overlap must be a fraction in [0, 1), got {a.overlap}")
    if a.step is not None and not (a.step > 0 and math.isfinite(a.step)):
        raise ValueError(f"--step must be a number > 0 pixels, got {a.step}")
    if not (a.jitter >= 0 and math.isfinite(a.jitter)):
        raise ValueError(f"--jitter must be >= 0 pixels, got {a.jitter}")
    if not (a.nphotons > 0 and math.isfinite(a.nphotons)):
        raise ValueError(f"--nphotons must be a finite number > 0, got {a.nphotons}")
    if a.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {a.seed}")
    if a.phase_image is not None and not a.object.startswith("image:"):
        raise ValueError("--phase-image needs --object image:PATH")
    if a.feature_density is not None:
        if not (a.feature_density > 0 and math.isfinite(a.feature_density)):
            raise ValueError(f"--feature-density must be a finite number > 0 features per pixel, "
                             f"got {a.feature_density}")
        if a.object not in DEFAULT_FEATURE_DENSITY:
            raise ValueError(f"--feature-density applies to --object "
                             f"{' or '.join(DEFAULT_FEATURE_DENSITY)}, not {a.object!r}")
    lo, hi = a.amplitude_range
    if not (0 <= lo <= hi):
        raise ValueError(f"--amplitude-range needs 0 <= LO <= HI, got {lo} {hi}")
    lo, hi = a.phase_range
    if not (lo <= hi and math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"--phase-range needs finite LO <= HI, got {lo} {hi}")
    out = Path(a.output)
    if a.split != "none" and out.suffix.lower() == ".npz":
        raise ValueError(f"with --split {a.split}, --output must be a directory, got {a.output!r}")
    if a.split == "none" and out.is_dir():
        raise ValueError(f"--output {a.output!r} is a directory; give a file name such as data.npz")


def _write(data, path: Path, args, step: float, diameter: float, preview: bool,
           title: str) -> None:
    from ptycho.atomic import atomic_write_json
    from ptycho.data.contract import save_npz
    from ptycho.physics import mean_photons

    save_npz(path, data, compressed=args.compress)
    info = {
        "file": path.name, "M": data.M, "N": data.N, "object_shape": list(data.object.shape),
        "object": args.object, "phase_image": args.phase_image, "scan": args.scan,
        "step_px": step, "probe_diameter_px": diameter, "jitter_px": args.jitter,
        "nphotons": args.nphotons, "mean_photons_per_pattern": mean_photons(data.diffraction),
        "noise": args.noise, "seed": args.seed, "split": args.split,
        "interpolation": args.interpolation, "smoothing": args.smoothing,
        "correlation_length": args.correlation_length,
        "feature_density": effective_feature_density(args.object, args.feature_density),
        "line_length_range_px": (list(DEFAULT_LINE_LENGTH_RANGE) if args.object == "lines"
                                 else None),
        "amplitude_range": list(args.amplitude_range), "phase_range": list(args.phase_range),
        "probe": args.probe or "default_probe",
    }
    atomic_write_json(path.with_name(path.stem + "_simulation.json"), info)
    if preview:
        from ptycho.plotting import save_simulation_preview_png

        save_simulation_preview_png(data.object, data.probe, data.diffraction, data.positions,
                                    path.with_name(path.stem + "_preview.png"), title)
    print(f"wrote {path}: M={data.M} patterns, N={data.N}, object {data.object.shape[0]}x"
          f"{data.object.shape[1]}, step {step:.2f} px, "
          f"{info['mean_photons_per_pattern']:.4g} photons/pattern")


def _run(a: argparse.Namespace) -> None:
    from ptycho.probe import default_probe, normalize_probe

    _validate_args(a)
    if a.probe is not None:
        probe = _probe_from_npz(a.probe)
        if a.N is not None and probe.shape[0] != a.N:
            raise ValueError(f"--N {a.N} does not match the probe in {a.probe!r} "
                             f"(shape {probe.shape})")
        N = probe.shape[0]
        if N < 8 or N % 2:
            raise ValueError(f"probe in {a.probe!r} must have an even side >= 8, got {N}")
        probe = normalize_probe(probe, name=f"{a.probe}:probeGuess")
    else:
        N = 64 if a.N is None else a.N
        probe = default_probe(N)
    diameter = probe_diameter(probe)
    step = a.step if a.step is not None else step_from_overlap(
        diameter, DEFAULT_OVERLAP if a.overlap is None else a.overlap)

    obj_ss, scan_ss, noise_ss = np.random.SeedSequence(a.seed).spawn(3)
    obj_rngs = [np.random.default_rng(s) for s in obj_ss.spawn(2)]
    scan_rngs = [np.random.default_rng(s) for s in scan_ss.spawn(2)]
    noise_rngs = [np.random.default_rng(s) for s in noise_ss.spawn(2)]
    n_files = 1 if a.split == "none" else 2
    local = [make_scan(a.scan, a.n_patterns, step, scan_rngs[i], jitter=a.jitter)
             for i in range(n_files)]
    ext = np.array([scan_extent(loc) for loc in local])  # (files, 2)
    need = [required_size(ext[:, k].max(), N, SCAN_MARGIN) for k in (0, 1)]
    if a.split == "region":
        need[1] *= 2
    shape = tuple(need) if a.object_size is None else a.object_size
    if a.object_size is not None and min(shape) < N:
        raise ValueError(f"--object-size {shape[0]}x{shape[1]} is smaller than the patch N={N}")

    def obj_for(i: int) -> np.ndarray:
        return make_object(a.object, shape, obj_rngs[i], phase_image=a.phase_image,
                           smoothing=a.smoothing, correlation_length=a.correlation_length,
                           feature_density=a.feature_density,
                           amplitude_range=tuple(a.amplitude_range),
                           phase_range=tuple(a.phase_range))

    if a.split == "region":
        half = shape[1] // 2
        regions = [((shape[0], half), (0, 0)), ((shape[0], shape[1] - half), (0, half))]
        obj = obj_for(0)
        objects = [obj, obj]
    else:
        regions = [(shape, (0, 0))] * n_files
        objects = [obj_for(i) for i in range(n_files)]
    try:
        positions = [place_scan(local[i], N, regions[i][0], regions[i][1], SCAN_MARGIN)
                     for i in range(n_files)]
    except ValueError as exc:
        raise ValueError(f"{exc}; enlarge --object-size (or leave it out), or reduce "
                         f"--n-patterns / the step") from None

    progress = a.progress if a.progress is not None else a.n_patterns > 2048
    if a.split == "none":
        out = Path(a.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        paths = [out]
    else:
        out_dir = Path(a.output)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / "train.npz", out_dir / "test.npz"]
    for i, path in enumerate(paths):
        data = simulate_scan(objects[i], probe, positions[i], a.nphotons, noise_rngs[i],
                             noise=a.noise, interpolation=a.interpolation, progress=progress)
        label = "" if a.split == "none" else f" [{path.stem}, split={a.split}]"
        title = (f"{path.name}{label}: object {a.object}, {a.scan} scan, M={data.M}, N={N}, "
                 f"step {step:.1f} px, {a.nphotons:.3g} photons, seed {a.seed}")
        _write(data, path, a, step, diameter, a.preview, title)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0 on success, 2 on bad arguments or input."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        _run(args)
    except (ValueError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
