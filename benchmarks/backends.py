"""Train and run inference with one backend's CLIs, measured from the outside.

Backends: ``tensorflow`` (``python -m ptycho.train`` / ``python -m ptycho.inference``) and
``pytorch`` (``python -m ptycho_torch.train`` / ``python -m ptycho_torch.inference``); the flags
are the shared ones of ``ptycho.cli_common``. Both run on the CPU with the same seed, batch size,
epochs and validation fraction.

Training measurements:

* ``wall_s`` and ``peak_rss_mb`` of the training process (``os.wait4``);
* per-epoch wall time: TensorFlow records ``time_s`` per epoch in ``history.json``; for PyTorch
  the elapsed time of Lightning's per-epoch progress bar in the log (1 s resolution), or else
  the rewrite times of ``checkpoints/last.ckpt`` (rewritten after every epoch). ``epoch_s`` is
  the median over epochs after the first (the first includes graph tracing / warm-up, reported
  as ``first_epoch_s``); with one epoch it is that epoch.
  An epoch includes its validation pass (``validation_fraction`` of the groups, forward only).
* ``patterns_per_s`` = training patterns per epoch / ``epoch_s``; ``gflops`` = that rate times
  the convolution FLOPs of a training step per pattern (``benchmarks.flops``).

Inference: ``timing.json`` of the CLI (``total_s`` is the time-to-image: load, predict, stitch,
write), the process's wall time and peak RSS, the CLI's ``metrics.json`` and our own metrics on
the common illumination mask (``benchmarks.evaluate``).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.evaluate import clean, quality
from benchmarks.flops import flops_per_pattern
from benchmarks.measure import run_command, tail
from benchmarks.scenarios import FILTER_SCALE, INTERPOLATION
from ptycho.sampling import validation_count

__all__ = ["BACKENDS", "CLI_MODULES", "train_backend", "infer_backend", "train_flags",
           "epoch_times", "summarise_epochs", "tqdm_epoch_times", "training_rates",
           "refresh_training"]

CLI_MODULES = {"tensorflow": ("ptycho.train", "ptycho.inference"),
               "pytorch": ("ptycho_torch.train", "ptycho_torch.inference")}
BACKENDS = tuple(CLI_MODULES)


def train_flags(train_npz: Path, out_dir: Path, *, gridsize: int, epochs: int, batch_size: int,
                validation_fraction: float, seed: int = 0) -> list[str]:
    """The shared training flags used for both backends."""
    return ["--train_data_file", str(train_npz), "--output_dir", str(out_dir), "--N", "64",
            "--gridsize", str(gridsize), "--max_epochs", str(epochs),
            "--batch_size", str(batch_size), "--validation_fraction", str(validation_fraction),
            "--early_stopping_patience", str(max(epochs, 1) + 1), "--accelerator", "cpu",
            "--logger", "none", "--seed", str(seed), "--filter_scale", f"{FILTER_SCALE:g}",
            "--interpolation", INTERPOLATION]


_TQDM_EPOCH = re.compile(r"Epoch (\d+): 100%\|[^|]*\|\s*\d+/\d+ \[(?:(\d+):)?(\d+):(\d+)<")


def tqdm_epoch_times(log_text: str) -> list[float]:
    """Per-epoch seconds from Lightning's progress bar in a training log.

    The last refresh of each ``Epoch k: 100%|...| n/n [mm:ss<...`` line is printed after the
    epoch's validation, so its elapsed time covers the whole epoch (1 s resolution).
    """
    last: dict[int, float] = {}
    for line in log_text.replace("\r", "\n").splitlines():
        m = _TQDM_EPOCH.search(line)
        if m:
            h = int(m.group(2) or 0)
            last[int(m.group(1))] = 3600.0 * h + 60.0 * int(m.group(3)) + float(m.group(4))
    return [last[k] for k in sorted(last)]


def epoch_times(history: dict, marks: list, log_text: str = "") -> tuple[list[float], bool, str]:
    """Per-epoch seconds, whether the first epoch is among them, and their source.

    In order of preference: ``history['time_s']`` (TensorFlow records every epoch); the
    progress-bar times in the log (PyTorch/Lightning, every epoch, 1 s resolution); the
    differences of ``marks`` (times at which the per-epoch checkpoint changed; the first mark
    ends epoch 1, whose start is unknown, so they cover epochs 2, 3, ...).
    """
    t = [float(v) for v in history.get("time_s", []) if v is not None]
    if t:
        return t, True, "history time_s"
    t = tqdm_epoch_times(log_text)
    n = len(history.get("epoch", []))
    if t and (n == 0 or len(t) == n):
        return t, True, "progress bar elapsed (1 s resolution)"
    return [b - a for a, b in zip(marks, marks[1:])], False, "checkpoint mtimes"


def summarise_epochs(times: list[float], has_first: bool, wall_s: float, n_epochs: int,
                     source: str = "") -> dict:
    """``epoch_s`` (median of the steady-state epochs), ``first_epoch_s`` and the source."""
    if not times:
        return {"epoch_s": wall_s / max(n_epochs, 1), "first_epoch_s": None,
                "epoch_time_source": "process wall time / epochs (includes start-up)"}
    steady = times[1:] if has_first and len(times) > 1 else times
    return {"epoch_s": statistics.median(steady),
            "first_epoch_s": times[0] if has_first else None, "epoch_times_s": times,
            "epoch_time_source": source}


def training_rates(summary: dict, patterns_per_epoch: int, gridsize: int) -> dict:
    """Training patterns/s and convolution GFLOP/s from an epoch summary."""
    e = summary["epoch_s"]
    rate = patterns_per_epoch / e if e and e > 0 else float("nan")
    return {"patterns_per_s": rate,
            "gflops": rate * flops_per_pattern(64, gridsize, True, train=True,
                                                    filter_scale=FILTER_SCALE) / 1e9}


def train_backend(backend: str, train_npz: Path, work: Path, *, gridsize: int, epochs: int,
                  batch_size: int, validation_fraction: float, n_train_patterns: int,
                  threads: int, timeout_s: Optional[float] = None,
                  n_groups: Optional[int] = None) -> dict:
    """Train one backend; returns measurements (see module doc) and ``model_dir``.

    ``n_train_patterns`` is the number of groups trained on (the scan's patterns, or
    ``n_groups`` when given); it sets the patterns-per-epoch count.
    """
    module = CLI_MODULES[backend][0]
    out = Path(work)
    if out.exists():
        shutil.rmtree(out)
    argv = [sys.executable, "-m", module, *train_flags(
        train_npz, out, gridsize=gridsize, epochs=epochs, batch_size=batch_size,
        validation_fraction=validation_fraction)]
    if n_groups is not None:
        argv += ["--n_groups", str(n_groups)]
    watch = out / "checkpoints" / "last.ckpt" if backend == "pytorch" else None
    env = {"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    res = run_command(argv, out.parent / f"{out.name}.log", env=env, timeout_s=timeout_s,
                      watch_file=watch)
    hist_path = out / "history.json"
    history = json.loads(hist_path.read_text()) if hist_path.is_file() else {}
    n_epochs = len(history.get("epoch", [])) or epochs
    n_val = validation_count(n_train_patterns, validation_fraction)
    per_epoch = (n_train_patterns - n_val) * gridsize ** 2
    times, has_first, source = epoch_times(history, res.marks, tail(res.log_path, 10 ** 7))
    summary = summarise_epochs(times, has_first, res.wall_s, n_epochs, source)
    rates = training_rates(summary, per_epoch, gridsize)
    final = {k: (history.get(k) or [None])[-1] for k in ("train_loss", "val_loss")}
    return clean({"backend": backend, "wall_s": res.wall_s, "peak_rss_mb": res.peak_rss_mb,
                  "epochs": n_epochs, "patterns_per_epoch": per_epoch,
                  **rates, **summary, **final, "gridsize": gridsize,
                  "model_dir": str(out / "model"), "log": str(res.log_path)})


def infer_backend(backend: str, model_dir: Path, test_npz: Path, work: Path, *, threads: int,
                  mask: Optional[np.ndarray] = None, truth: Optional[np.ndarray] = None,
                  batch_size: int = 64, timeout_s: Optional[float] = None) -> dict:
    """Run the inference CLI once; returns timing.json, process measurements and metrics."""
    module = CLI_MODULES[backend][1]
    out = Path(work)
    if out.exists():
        shutil.rmtree(out)
    argv = [sys.executable, "-m", module, "--model_path", str(model_dir), "--test_data",
            str(test_npz), "--output_dir", str(out), "--batch_size", str(batch_size),
            "--accelerator", "cpu"]
    env = {"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    res = run_command(argv, out.parent / f"{out.name}.log", env=env, timeout_s=timeout_s)
    timing = json.loads((out / "timing.json").read_text())
    result = {"backend": backend, "process_wall_s": res.wall_s,
              "process_peak_rss_mb": res.peak_rss_mb, "timing": timing,
              "time_to_image_s": timing.get("total_s"),
              "patterns_per_s": timing.get("patterns_per_s"), "log": str(res.log_path)}
    cli_metrics = out / "metrics.json"
    if cli_metrics.is_file():
        m = json.loads(cli_metrics.read_text())
        result["cli_metrics"] = {k: m.get(k) for k in ("amp_ssim", "phase_ssim", "amp_psnr",
                                                       "phase_psnr", "amp_frc50")}
    if truth is not None and mask is not None:
        with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
            origin = tuple(int(v) for v in z["origin"]) if "origin" in z.files else (0, 0)
            result["quality"] = quality(z["object"], truth, mask, origin=origin)
    return clean(result)


def refresh_training(train: dict) -> dict:
    """Recompute the epoch times and rates of a ``train_backend`` result from its saved files
    (``history.json`` beside the bundle and the training log); returns an updated copy."""
    out_dir = Path(train["model_dir"]).parent
    hist = out_dir / "history.json"
    history = json.loads(hist.read_text()) if hist.is_file() else {}
    times, has_first, source = epoch_times(history, [], tail(Path(train["log"]), 10 ** 7))
    if not times:
        return train
    summary = summarise_epochs(times, has_first, train["wall_s"], train["epochs"], source)
    new = {**train, **summary}
    new.update(training_rates(summary, train["patterns_per_epoch"],
                              train.get("gridsize") or _gridsize_from(history, train)))
    return clean(new)


def _gridsize_from(history: dict, train: dict) -> int:
    manifest = Path(train["model_dir"]) / "manifest.json"
    if manifest.is_file():
        return int(json.loads(manifest.read_text()).get("gridsize", 1))
    return 1
