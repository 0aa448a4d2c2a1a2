"""Shared test data for the benchmark tests."""

from pathlib import Path

import numpy as np

from ptycho import simulate


def tiny_lines_scan(out_dir: Path, n_patterns: int, *extra_args: str) -> Path:
    """A noise-free 32x32 ``lines`` scan of ``n_patterns`` patterns (seed 2) in ``out_dir``."""
    path = Path(out_dir) / "scan.npz"
    assert simulate.main(["--output", str(path), "--object", "lines", "--N", "32",
                          "--n-patterns", str(n_patterns), "--nphotons", "1e8", "--no-noise",
                          "--no-preview", "--seed", "2", *extra_args]) == 0
    return path


def without_ground_truth(scan: Path, out_dir: Path) -> Path:
    """A copy of the NPZ ``scan`` without its ``objectGuess`` key, written to ``out_dir``."""
    arrays = dict(np.load(scan))
    arrays.pop("objectGuess")
    bare = Path(out_dir) / "bare.npz"
    np.savez(bare, **arrays)
    return bare
