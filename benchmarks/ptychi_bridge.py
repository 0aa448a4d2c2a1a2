"""Harness side of the Pty-chi comparison: run ``ptychi_runner.py`` in its own environment and
score its objects exactly like the network's.

The runner is started with the interpreter of ``benchmarks/.venv-ptychi`` (made by
``benchmarks/setup_ptychi_env.sh``); the reconstructions come back as an NPZ whose objects lie on
the ground truth's pixel grid, so they are scored by :func:`benchmarks.evaluate.quality` with
the same illumination mask as the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.evaluate import quality
from benchmarks.measure import run_command

__all__ = ["PTYCHI_VENV", "ptychi_python", "run_ptychi"]

HERE = Path(__file__).resolve().parent
PTYCHI_VENV = HERE / ".venv-ptychi"
RUNNER = HERE / "ptychi_runner.py"


def ptychi_python(venv: Path = PTYCHI_VENV) -> Path:
    """The Pty-chi environment's interpreter; FileNotFoundError with the fix if it is missing."""
    py = Path(venv) / "bin" / "python"
    if not py.is_file():
        raise FileNotFoundError(f"{py} not found: create the Pty-chi environment with "
                                "`bash benchmarks/setup_ptychi_env.sh` (make bench does this)")
    return py


def run_ptychi(test_npz: Path, nphotons: float, out_dir: Path, iterations, mask: np.ndarray,
               truth: np.ndarray, *, threads: int = 2, batch_size: int = 32,
               algorithms=("epie", "rpie", "lsqml"), timeout_s: Optional[float] = None) -> dict:
    """Run every algorithm up to ``max(iterations)`` and score each checkpoint.

    Returns ``{"runs": {"rpie": {"100": {"time_s", "setup_s", "total_s", **metrics}}},
    "peak_rss_mb", "wall_s", "versions", "batch_size", "threads"}``. ``time_s`` is the
    reconstruction time to that iteration count; ``total_s`` adds the task set-up (data transfer,
    object/probe construction), the figure compared with the network's time-to-image.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_npz = out_dir / "ptychi.npz"
    argv = [ptychi_python(), "-W", "ignore", RUNNER, "--data", test_npz, "--nphotons",
            repr(float(nphotons)), "--output", out_npz, "--threads", str(threads),
            "--batch-size", str(batch_size), "--algorithms", *algorithms,
            "--iterations", *[str(i) for i in iterations]]
    res = run_command(argv, out_dir / "ptychi.log", timeout_s=timeout_s,
                      env={"OMP_NUM_THREADS": str(threads)})
    report = json.loads(out_npz.with_suffix(".json").read_text())
    runs: dict = {}
    with np.load(out_npz, allow_pickle=False) as z:
        for alg, info in report["algorithms"].items():
            runs[alg] = {}
            for it in (str(i) for i in report["iterations"]):
                if it not in info["time_s"]:
                    runs[alg][it] = {"diverged": True, "batch_size": info.get("batch_size")}
                    continue
                t = info["time_s"][it]
                metrics = quality(z[f"{alg}_{it}"], truth, mask)
                runs[alg][it] = {"time_s": t, "setup_s": info["setup_s"],
                                 "total_s": t + info["setup_s"],
                                 "batch_size": info.get("batch_size"), **metrics}
    return {"runs": runs, "peak_rss_mb": res.peak_rss_mb, "wall_s": res.wall_s,
            "versions": report["versions"], "batch_size": report["batch_size"],
            "threads": report["threads"], "iterations": report["iterations"]}
