"""Seeded initial network weights shared by both backends (NumPy only).

Each backend's own initialiser draws from its own random stream, so the same seed would start
the two backends from different networks. :func:`initial_conv_weights` draws every convolution
of the contract network (``ptycho.convert.canonical_shapes``) from one NumPy generator instead,
and both training paths import the result right after building their model:

* kernels ``(3, 3, in, out)`` (HWIO) Glorot-uniform on ``[-l, l)`` with
  ``l = sqrt(6 / (fan_in + fan_out))``, ``fan_in = 9·in``, ``fan_out = 9·out`` (the Keras
  default for convolutions), drawn in float64 and stored as float32;
* biases ``(out,)`` zero;
* drawn from ``np.random.default_rng(seed)`` layer by layer in the canonical order (kernel
  only; biases use no draws), so the numbers depend on N, gridsize, filter_scale, probe_big
  and the seed, never on the backend.

:func:`initial_weights` puts them into a complete canonical dict: ``log_intensity_scale`` and
``probe`` come from the freshly built model's own export (``base``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["glorot_limit", "initial_conv_weights", "initial_weights"]


def glorot_limit(kernel_shape: tuple[int, ...]) -> float:
    """Glorot-uniform bound ``sqrt(6 / (fan_in + fan_out))`` of an HWIO kernel shape."""
    *receptive, cin, cout = kernel_shape
    field = int(np.prod(receptive)) if receptive else 1
    return math.sqrt(6.0 / (field * cin + field * cout))


def initial_conv_weights(model_config, seed: int) -> dict[str, np.ndarray]:
    """``{"{layer}/kernel": (3, 3, in, out), "{layer}/bias": (out,)}`` float32 for every
    convolution of the network of ``model_config`` (N, gridsize, filter_scale, probe_big), in
    the canonical order, from ``np.random.default_rng(seed)`` (``seed`` an integer >= 0)."""
    from ptycho.convert import canonical_shapes

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    out: dict[str, np.ndarray] = {}
    for name, shape in canonical_shapes(model_config).items():
        if name.endswith("/kernel"):
            limit = glorot_limit(shape)
            out[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        elif name.endswith("/bias"):
            out[name] = np.zeros(shape, np.float32)
    return out


def initial_weights(model_config, seed: int, base: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Complete canonical weights: ``base`` (a freshly built model's export, which supplies
    ``log_intensity_scale`` and ``probe``) with every kernel and bias replaced by
    :func:`initial_conv_weights`; validated with ``ptycho.convert.check_canonical``."""
    from ptycho.convert import check_canonical

    arrays = dict(check_canonical(base, model_config, where="base weights"))
    arrays.update(initial_conv_weights(model_config, seed))
    return arrays
