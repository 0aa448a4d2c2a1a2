"""Layers and filter counts of the PtychoPINN network, shared by both backends and the converter.

For a patch side ``N`` (a power of two >= 16) the encoder has ``log2(N) - 3`` stages whose
filters double from stage to stage and end at 256 (N=64: 64, 128, 256); the decoders mirror
the encoder without its deepest stage (N=64: 128, 64). ``filter_scale`` multiplies every
count (rounded, at least 1): 1 is the reference network (about 2.3 M parameters at N=64),
0.5 has a quarter of its parameters and convolution FLOPs, which trains several times faster
on a CPU.

Two decoders share that encoder (``model.decoder``):

* ``"reference"`` (DESIGN §5): an amplitude and a phase decoder of ``n_stages - 1`` stages
  [conv -> ReLU -> conv -> ReLU -> nearest upsample 2] from N/2**n_stages up to N/2, a 3x3 conv
  to C channels for the central N/2 x N/2 block and, with ``probe_big``, one more upsample and
  conv for the border.
* ``"unet"``: one decoder that works up to full resolution with skip connections. A bottleneck
  stage ``mid`` (2 x the deepest encoder filters) at N/2**n_stages, then ``n_stages`` stages
  [nearest upsample 2 -> concatenate the pre-pool features of the encoder stage of that size
  (upsampled first, skip second) -> conv -> ReLU -> conv -> ReLU] with the filters of that
  encoder stage, and two 3x3 heads ``amp_out`` and ``phase_out`` on the N x N features. Without
  ``probe_big`` the heads' output is kept only in the central block. Fine object detail reaches
  the output through the skips, not only through features of N/4 and coarser.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["network_filters", "check_filter_scale", "FILTER_SCALE_RANGE", "DECODERS",
           "check_decoder", "conv_layers", "conv_layer_sides"]

FILTER_SCALE_RANGE = (1.0 / 64.0, 4.0)
DECODERS = ("reference", "unet")


def check_filter_scale(filter_scale) -> float:
    """``filter_scale`` as a float in ``FILTER_SCALE_RANGE``, else ``ValueError`` naming it."""
    lo, hi = FILTER_SCALE_RANGE
    if isinstance(filter_scale, bool) or not isinstance(filter_scale, (int, float, np.number)) \
            or not (lo <= float(filter_scale) <= hi):
        raise ValueError(f"filter_scale must be a number in [{lo:g}, {hi:g}], got {filter_scale!r}")
    return float(filter_scale)


def network_filters(N: int, filter_scale: float = 1.0) -> tuple[list[int], list[int]]:
    """``(encoder, decoder)`` filter counts, e.g. N=64 -> ``[64, 128, 256]``, ``[128, 64]``."""
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 16 or N & (N - 1):
        raise ValueError(f"N must be a power of two >= 16, got {N!r}")
    scale = check_filter_scale(filter_scale)
    n_stages = int(round(math.log2(int(N)))) - 3
    enc = [max(1, int(round(scale * 256 / 2 ** (n_stages - 1 - i)))) for i in range(n_stages)]
    return enc, enc[:-1][::-1]


def check_decoder(decoder) -> str:
    """``decoder`` if it is one of ``DECODERS``, else ``ValueError`` naming it."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    return decoder


def _layer_specs(N: int, channels: int, probe_big: bool, filter_scale: float,
                 decoder: str) -> list[tuple[str, int, int, int]]:
    """``(name, in, out, side)`` of every convolution; ``side`` is the pixel side it runs at."""
    enc, dec = network_filters(N, filter_scale)
    check_decoder(decoder)
    C, n = int(channels), len(enc)
    layers: list[tuple[str, int, int, int]] = []
    cin = C
    for i, f in enumerate(enc):
        layers += [(f"enc{i}_conv0", cin, f, N >> i), (f"enc{i}_conv1", f, f, N >> i)]
        cin = f
    if decoder == "unet":
        mid = 2 * enc[-1]
        layers += [("mid_conv0", enc[-1], mid, N >> n), ("mid_conv1", mid, mid, N >> n)]
        prev = mid
        for j, skip in enumerate(enc[::-1]):
            side = N >> (n - 1 - j)
            layers += [(f"dec{j}_conv0", prev + skip, skip, side),
                       (f"dec{j}_conv1", skip, skip, side)]
            prev = skip
        return layers + [("amp_out", prev, C, N), ("phase_out", prev, C, N)]
    for d in ("amp", "phase"):
        prev = enc[-1]
        for j, f in enumerate(dec):
            side = N >> (n - j)
            layers += [(f"{d}_dec{j}_conv0", prev, f, side), (f"{d}_dec{j}_conv1", f, f, side)]
            prev = f
        layers.append((f"{d}_out", prev, C, N // 2))
        if probe_big:
            layers.append((f"{d}_big_out", prev, C, N))
    return layers


def conv_layers(N: int, channels: int, probe_big: bool, filter_scale: float = 1.0,
                decoder: str = "reference") -> list[tuple[str, int, int]]:
    """``(name, in, out)`` of every 3x3 convolution of the network, in the contract's order.

    ``channels`` is C = gridsize**2 (input planes and output planes of each head). Both
    backends build their layers from this list and the weight converter checks against it.
    """
    return [(name, cin, cout) for name, cin, cout, _ in
            _layer_specs(N, channels, probe_big, filter_scale, decoder)]


def conv_layer_sides(N: int, probe_big: bool, filter_scale: float = 1.0,
                     decoder: str = "reference") -> dict[str, int]:
    """``{name: side}``: the spatial side in pixels at which each convolution runs (the
    reference heads at N/2, the central block; the U-Net heads and ``*_big_out`` at N)."""
    return {name: side for name, _, _, side in
            _layer_specs(N, 1, probe_big, filter_scale, decoder)}
