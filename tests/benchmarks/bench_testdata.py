"""Shared test data for the benchmark tests."""

from pathlib import Path

import numpy as np


def without_ground_truth(scan: Path, out_dir: Path) -> Path:
    """A copy of the NPZ ``scan`` without its ``objectGuess`` key, written to ``out_dir``."""
    arrays = dict(np.load(scan))
    arrays.pop("objectGuess")
    bare = Path(out_dir) / "bare.npz"
    np.savez(bare, **arrays)
    return bare
