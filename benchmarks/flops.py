"""Convolution FLOP counts of the network and the machine's measured convolution FLOP rate.

FLOP count: from the layer shapes of the contract network (``docs/api_contract.md``, "Network";
either decoder):
all convolutions 3x3, stride 1, "same" padding, ``2 * H * W * 9 * C_in * C_out`` floating-point
operations each (one multiply and one add per weight and output pixel; bias, activations,
pooling, upsampling and the FFT physics are not counted -- they are a few percent). A training
step costs about three forward passes (forward, gradient w.r.t. activations, gradient w.r.t.
weights), the usual convention; we report ``train = 3 * forward``.

Measured rate: a microbenchmark times forward + backward of 3x3 convolutions of the network's own
shapes (batch 16) on each backend and reports the best rate over those shapes, the practical peak
for this kind of work on this machine. The fraction of it reached by a training run is the
target "training >= 40% of measured conv FLOP rate".
"""

from __future__ import annotations

import time

from ptycho.architecture import conv_layer_sides
from ptycho.architecture import conv_layers as architecture_layers

__all__ = ["conv_layers", "forward_flops_per_group", "flops_per_pattern", "TRAIN_FACTOR",
           "conv_microbenchmark_torch", "conv_microbenchmark_tf", "MICRO_SHAPES"]

TRAIN_FACTOR = 3.0
"""Training step FLOPs per forward FLOP (forward + two backward products)."""

MICRO_SHAPES = ((64, 64, 64), (32, 128, 128), (16, 256, 256))
"""(spatial side, C_in, C_out) of the timed convolutions: the network's heaviest layers at N=64."""


def conv_layers(N: int = 64, gridsize: int = 1, probe_big: bool = True,
                filter_scale: float = 1.0, decoder: str = "reference") -> list[tuple]:
    """``[(name, H, W, C_in, C_out), ...]`` for every 3x3 convolution of the network
    (``ptycho.architecture.conv_layers`` with the side each one runs at)."""
    if gridsize < 1:
        raise ValueError(f"gridsize must be >= 1, got {gridsize}")
    sides = conv_layer_sides(N, probe_big, filter_scale, decoder)
    return [(name, sides[name], sides[name], cin, cout)
            for name, cin, cout in architecture_layers(N, gridsize ** 2, probe_big, filter_scale,
                                                       decoder)]


def forward_flops_per_group(N: int = 64, gridsize: int = 1, probe_big: bool = True,
                            filter_scale: float = 1.0, decoder: str = "reference") -> float:
    """Convolution FLOPs of one forward pass of one group (C = gridsize**2 patterns)."""
    return float(sum(2 * h * w * 9 * cin * cout for _, h, w, cin, cout
                     in conv_layers(N, gridsize, probe_big, filter_scale, decoder)))


def flops_per_pattern(N: int = 64, gridsize: int = 1, probe_big: bool = True,
                      train: bool = False, filter_scale: float = 1.0,
                      decoder: str = "reference") -> float:
    """Forward (or training-step, ``train=True``) convolution FLOPs per diffraction pattern."""
    f = forward_flops_per_group(N, gridsize, probe_big, filter_scale, decoder) / gridsize ** 2
    return f * TRAIN_FACTOR if train else f


def _best(rates: dict) -> float:
    return max(rates.values()) if rates else float("nan")


def conv_microbenchmark_torch(threads: int, batch: int = 16, min_time_s: float = 1.0) -> dict:
    """Forward+backward 3x3 conv FLOP rate with PyTorch on the CPU (GFLOP/s per shape, best)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rates = {}
    for side, cin, cout in MICRO_SHAPES:
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
        x = torch.randn(batch, cin, side, side, requires_grad=True)
        flops = TRAIN_FACTOR * 2 * side * side * 9 * cin * cout * batch

        def step():
            conv.zero_grad(set_to_none=True)
            x.grad = None
            conv(x).sum().backward()

        step()
        n, t0 = 0, time.perf_counter()
        while True:
            step()
            n += 1
            el = time.perf_counter() - t0
            if el >= min_time_s and n >= 2:
                break
        rates[f"{side}x{side}x{cin}->{cout}"] = flops * n / el / 1e9
    return {"backend": "torch", "version": torch.__version__, "threads": threads, "batch": batch,
            "gflops_per_shape": rates, "best_gflops": _best(rates)}


def conv_microbenchmark_tf(threads: int, batch: int = 16, min_time_s: float = 1.0) -> dict:
    """Forward+backward 3x3 conv FLOP rate with TensorFlow on the CPU (GFLOP/s, best shape)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # the runtime was already initialised in this process; keep its settings
    rates = {}
    rng = tf.random.Generator.from_seed(0)
    for side, cin, cout in MICRO_SHAPES:
        x = rng.normal((batch, side, side, cin))
        w = tf.Variable(rng.normal((3, 3, cin, cout)) * 0.05)
        flops = TRAIN_FACTOR * 2 * side * side * 9 * cin * cout * batch

        @tf.function
        def step(x=x, w=w):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.nn.conv2d(x, w, 1, "SAME")
                loss = tf.reduce_sum(y)
            gx, gw = tape.gradient(loss, [x, w])
            return tf.reduce_sum(gx) + tf.reduce_sum(gw)

        step().numpy()
        n, t0 = 0, time.perf_counter()
        while True:
            step().numpy()
            n += 1
            el = time.perf_counter() - t0
            if el >= min_time_s and n >= 2:
                break
        rates[f"{side}x{side}x{cin}->{cout}"] = flops * n / el / 1e9
    return {"backend": "tensorflow", "version": tf.__version__, "threads": threads,
            "batch": batch, "gflops_per_shape": rates, "best_gflops": _best(rates)}


def _main(argv=None) -> int:
    """``python -m benchmarks.flops {torch|tensorflow} THREADS``: print one JSON result."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 2 or args[0] not in ("torch", "tensorflow"):
        print("usage: python -m benchmarks.flops {torch|tensorflow} THREADS", file=sys.stderr)
        return 2
    fn = conv_microbenchmark_torch if args[0] == "torch" else conv_microbenchmark_tf
    print(json.dumps(fn(int(args[1]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
