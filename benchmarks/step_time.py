"""Seconds per training step of each backend, and of the overlap constraint on its own.

A training step is forward + backward + Adam update of the whole model (network and physics) on
one batch of random inputs of the real shapes (N, gridsize, batch); the overlap constraint is
``group_reassemble`` forward + backward on a batch of complex patches. The constraint is timed
twice: as the library computes it (Fourier: separable shift matrices) and in the per-canvas form
of the NumPy reference (every member's canvas translated by its own 2L x 2L FFT pair), which
gives the same numbers; the ratio is what the matrix form saves. Each figure is the median of
``--repeats`` timed calls after two warm-up calls.

    python -m benchmarks.step_time [--backends pytorch tensorflow] [--gridsize 1 2]
        [--batch-size 8] [--filter-scale 0.25] [--interpolation fourier] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Optional, Sequence

import numpy as np

from benchmarks.report import markdown_table
from ptycho.atomic import atomic_write_json
from ptycho.config import ModelConfig
from ptycho.probe import default_probe

__all__ = ["median_seconds", "per_canvas_reassemble_torch", "per_canvas_reassemble_tf",
           "torch_timings", "tf_timings", "main"]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after two untimed warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _inputs(batch: int, C: int, N: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.random((batch, C, N, N), dtype=np.float32)
    offsets = (rng.normal(size=(batch, C, 2)) * 3).astype(np.float32)
    patches = (rng.normal(size=(batch, C, N, N))
               + 1j * rng.normal(size=(batch, C, N, N))).astype(np.complex64)
    return X, offsets, patches


def per_canvas_reassemble_torch(patches, offsets, pad: int, threshold: float):
    """Fourier ``group_reassemble`` with one ``translate`` per member canvas (reference form)."""
    import torch

    from ptycho_torch.helper import translate

    B, C, N, _ = patches.shape
    L = N + 2 * pad
    flat_off = offsets.reshape(B * C, 2)
    padded = torch.nn.functional.pad(patches.reshape(B * C, N, N), (pad, pad, pad, pad))
    total = translate(padded, flat_off, "fourier").reshape(B, C, L, L).sum(dim=1)
    ones = torch.ones(N, N, dtype=patches.real.dtype)
    fp = torch.nn.functional.pad(ones, (pad, pad, pad, pad)).expand(B * C, L, L)
    count = translate(fp, flat_off, "fourier").reshape(B, C, L, L).sum(dim=1)
    keep = count > threshold
    avg = torch.where(keep, total / torch.where(keep, count, torch.ones_like(count)),
                      torch.zeros_like(total))
    back = translate(avg[:, None].expand(B, C, L, L).reshape(B * C, L, L), -flat_off, "fourier")
    return back[:, pad:pad + N, pad:pad + N].reshape(B, C, N, N)


def per_canvas_reassemble_tf(patches, offsets, pad: int, threshold: float):
    """The TensorFlow counterpart of :func:`per_canvas_reassemble_torch` (float64 inside)."""
    import tensorflow as tf

    from ptycho.tf_helper import normalize_overlap, translate

    B, C, N = patches.shape[0], patches.shape[1], patches.shape[-1]
    L = N + 2 * pad
    flat = tf.reshape(tf.cast(patches, tf.complex128), [-1, N, N])
    flat_off = tf.reshape(tf.cast(offsets, tf.float64), [-1, 2])
    padding = [[0, 0], [pad, pad], [pad, pad]]
    total = tf.reduce_sum(tf.reshape(translate(tf.pad(flat, padding), flat_off, "fourier"),
                                     [B, C, L, L]), axis=1)
    fps = tf.ones([B * C, N, N], tf.float64)
    count = tf.reduce_sum(tf.reshape(translate(tf.pad(fps, padding), flat_off, "fourier"),
                                     [B, C, L, L]), axis=1)
    avg = normalize_overlap(total, count, threshold)
    back = translate(tf.reshape(tf.repeat(avg[:, None], C, axis=1), [-1, L, L]), -flat_off,
                     "fourier")[:, pad:pad + N, pad:pad + N]
    return tf.reshape(tf.cast(back, patches.dtype), [B, C, N, N])


def _threshold(interpolation: str) -> float:
    from ptycho.physics import FOURIER_OVERLAP_THRESHOLD, OVERLAP_THRESHOLD

    return FOURIER_OVERLAP_THRESHOLD if interpolation == "fourier" else OVERLAP_THRESHOLD


def torch_timings(config: ModelConfig, batch: int, repeats: int) -> dict:
    """``{"train_step_s", "network_step_s", "reassemble_s", "reassemble_per_canvas_s"}``."""
    import torch

    from ptycho_torch import helper
    from ptycho_torch.model import PtychoPINN

    torch.manual_seed(0)
    model = PtychoPINN(config, default_probe(config.N), 1.0, 1.0)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    X, off, patches = (torch.from_numpy(a) for a in _inputs(batch, model.C, config.N))

    def step(network_only: bool):
        if network_only:
            amp, phase = model.network(X)
            loss = amp.mean() + phase.mean()
        else:
            counts = model(X, off).counts
            loss = (counts - X ** 2 * torch.log(counts + 1e-8)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = {"train_step_s": median_seconds(lambda: step(False), repeats),
           "network_step_s": median_seconds(lambda: step(True), repeats)}
    if model.C > 1:
        pad = config.resolved_group_pad
        thr = _threshold(config.interpolation)
        p = patches.clone().requires_grad_(True)

        def constraint(fn):
            fn(p).abs().sum().backward()

        out["reassemble_s"] = median_seconds(lambda: constraint(
            lambda q: helper.group_reassemble(q, off, pad=pad,
                                              interpolation=config.interpolation)), repeats)
        if config.interpolation == "fourier":
            out["reassemble_per_canvas_s"] = median_seconds(lambda: constraint(
                lambda q: per_canvas_reassemble_torch(q, off, pad, thr)), repeats)
    return out


def tf_timings(config: ModelConfig, batch: int, repeats: int) -> dict:
    """``{"train_step_s", "reassemble_s", "reassemble_per_canvas_s"}`` of the TensorFlow backend
    (``tf.function``, no XLA)."""
    import tensorflow as tf

    from ptycho import tf_helper
    from ptycho.model import build_model
    from ptycho.tf_training import make_optimizer, make_steps

    tf.random.set_seed(0)
    model = build_model(config, default_probe(config.N), 1.0, 1.0)
    train_step, _ = make_steps(model, make_optimizer(1e-3))
    X, off, patches = _inputs(batch, config.gridsize ** 2, config.N)
    Xt = tf.constant(np.transpose(X, (0, 2, 3, 1)))
    offt = tf.constant(off)
    args = (Xt, offt, tf.constant(1.0, tf.float32), tf.zeros((0,), tf.complex64))
    out = {"train_step_s": median_seconds(lambda: train_step(*args), repeats)}
    if config.gridsize > 1:
        pad = config.resolved_group_pad
        thr = _threshold(config.interpolation)
        p = tf.Variable(patches)

        def constraint(fn):
            @tf.function
            def run():
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.abs(fn(p)))
                return tape.gradient(loss, p)
            return lambda: run()

        out["reassemble_s"] = median_seconds(constraint(
            lambda q: tf_helper.group_reassemble(q, offt, pad=pad,
                                                 interpolation=config.interpolation)), repeats)
        if config.interpolation == "fourier":
            out["reassemble_per_canvas_s"] = median_seconds(constraint(
                lambda q: per_canvas_reassemble_tf(q, offt, pad, thr)), repeats)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_time", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", choices=("pytorch", "tensorflow"),
                   default=["pytorch", "tensorflow"])
    p.add_argument("--gridsize", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batch-size", type=int, default=8, help="groups per step (default: 8)")
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--filter-scale", type=float, default=0.25)
    p.add_argument("--interpolation", choices=("fourier", "bilinear"), default="fourier")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    rows = []
    for backend in a.backends:
        for g in a.gridsize:
            cfg = ModelConfig(N=a.N, gridsize=g, filter_scale=a.filter_scale,
                              interpolation=a.interpolation)
            fn = torch_timings if backend == "pytorch" else tf_timings
            rows.append({"backend": backend, "gridsize": g, "batch_size": a.batch_size,
                         "N": a.N, "filter_scale": a.filter_scale,
                         "interpolation": a.interpolation, **fn(cfg, a.batch_size, a.repeats)})

    def ms(r, key):
        return f"{1e3 * r[key]:.1f}" if key in r else "—"

    print(markdown_table(
        ["backend", "gridsize", "train step [ms]", "network only [ms]",
         "overlap constraint [ms]", "per-canvas form [ms]"],
        [[r["backend"], r["gridsize"], ms(r, "train_step_s"), ms(r, "network_step_s"),
          ms(r, "reassemble_s"), ms(r, "reassemble_per_canvas_s")] for r in rows]))
    if a.json:
        atomic_write_json(a.json, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
