"""Per-group error reduction: the overlap constraint followed by K projections onto the data.

NumPy reference of the model's optional ``projection_steps`` (``model.projection_steps`` in
``ptycho.config``; TensorFlow: ``ptycho.tf_projection``, PyTorch: ``ptycho_torch.projection``).

The network's C patches of a group are first averaged on the group's own canvas exactly as
``ptycho.physics.group_reassemble`` does. Then, ``steps`` times, every member's patch is cut
out of the canvas, illuminated, propagated to the detector, given the measured amplitude while
keeping its phase, propagated back, and the canvas is replaced by the probe-weighted average of
the corrected exit waves (the object update of error reduction / the difference map's overlap
projection):

    psi_c  = P · back_c(canvas)                       exit wave of member c, (N, N)
    Psi'_c = A_c · F(psi_c) / |F(psi_c)|              F = far_field (unitary, centred)
    canvas = sum_c place_c(conj(P) · F⁻¹(Psi'_c)) / sum_c place_c(|P|²)    on lit pixels

``place_c`` pads an N×N array to the canvas centre and translates it by member c's offset;
``back_c`` translates by −offset and cuts the centre out (both exactly as in
``group_reassemble``). Lit pixels are those where ``sum_c place_c(|P|²)`` reaches
``lit_fraction`` of its maximum over the group's canvas; elsewhere the probe gives the data no
say and the canvas keeps the network's average. ``A`` is the measured diffraction amplitude in
the units of ``|F(P·O)|`` (the model passes ``X · f / s``). Groups never mix. With
``steps = 0`` the result equals ``group_reassemble``.

Each step moves the group's object towards agreement with its C measured patterns, so the
network has to supply what the data cannot fix in a few steps (the low spatial frequencies and
the dark parts of the canvas) and the projections supply the detail. Its cost per step is one
far-field pair per pattern and two canvas placements.
"""

from __future__ import annotations

import numpy as np

from ptycho.physics import (FOURIER_OVERLAP_THRESHOLD, OVERLAP_THRESHOLD, _check_interpolation,
                            far_field, translate)

__all__ = ["DEFAULT_LIT_FRACTION", "MODULUS_FLOOR", "inverse_far_field", "group_projection"]

DEFAULT_LIT_FRACTION = 0.05
"""Canvas pixels whose summed probe intensity is below this fraction of the group's maximum are
left to the network."""

MODULUS_FLOOR = 1e-12
"""``|F|`` is taken as ``sqrt(|F|² + MODULUS_FLOOR²)`` so that the phase ``F / |F|`` and its
gradient stay finite where the predicted far field vanishes."""


def inverse_far_field(F) -> np.ndarray:
    """Inverse of ``ptycho.physics.far_field``: ``ifft2(ifftshift(F), norm="ortho")``, complex128."""
    F = np.asarray(F, dtype=np.complex128)
    return np.fft.ifft2(np.fft.ifftshift(F, axes=(-2, -1)), axes=(-2, -1), norm="ortho")


def group_projection(patches, offsets, probe, target_amplitude, steps: int, pad: int | None = None,
                     interpolation: str = "bilinear", footprint=None,
                     threshold: float | None = None,
                     lit_fraction: float = DEFAULT_LIT_FRACTION) -> np.ndarray:
    """Overlap constraint plus ``steps`` error-reduction projections per group (module doc).

    patches (B, C, N, N) complex: the network's object patches; offsets (B, C, 2) ``(dy, dx)``
    ``coords_relative``; probe (N, N) complex; target_amplitude (B, C, N, N) real >= 0 (the
    measured amplitude in ``|far_field(probe · patch)|`` units); pad, interpolation, footprint,
    threshold as in ``group_reassemble``. Returns (B, C, N, N) complex of the patches'
    precision.
    """
    _check_interpolation(interpolation)
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[2] != patches.shape[3]:
        raise ValueError(f"patches must have shape (B, C, N, N), got {patches.shape}")
    B, C, N = patches.shape[:3]
    offs = np.asarray(offsets, dtype=np.float64)
    if offs.shape != (B, C, 2):
        raise ValueError(f"offsets must have shape {(B, C, 2)} to match patches {patches.shape}, "
                         f"got {offs.shape}")
    amp = np.asarray(target_amplitude, dtype=np.float64)
    if amp.shape != patches.shape:
        raise ValueError(f"target_amplitude must have the patches' shape {patches.shape}, "
                         f"got {amp.shape}")
    P = np.asarray(probe, dtype=np.complex128)
    if P.shape != (N, N):
        raise ValueError(f"probe must have shape {(N, N)}, got {P.shape}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not 0.0 < float(lit_fraction) < 1.0:
        raise ValueError(f"lit_fraction must be in (0, 1), got {lit_fraction}")
    pad = N // 2 if pad is None else int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if threshold is None:
        threshold = OVERLAP_THRESHOLD if interpolation == "bilinear" else FOURIER_OVERLAP_THRESHOLD
    fp = np.ones((N, N)) if footprint is None else np.asarray(footprint, dtype=np.float64)
    out_dtype = np.complex64 if patches.dtype in (np.float32, np.complex64) else np.complex128
    L = N + 2 * pad
    d = offs.reshape(B * C, 2)

    def place(arr):
        """(B, C, N, N) -> (B, L, L): each member padded to the canvas centre and shifted."""
        canvas = np.zeros((B * C, L, L), dtype=np.complex128)
        canvas[:, pad:pad + N, pad:pad + N] = np.broadcast_to(arr, (B, C, N, N)).reshape(-1, N, N)
        return translate(canvas, d, interpolation).reshape(B, C, L, L).sum(axis=1)

    def back(canvas):
        """(B, L, L) -> (B, C, N, N): the canvas shifted by -offset, centre cut out."""
        rep = np.repeat(canvas[:, None], C, axis=1).reshape(B * C, L, L)
        return translate(rep, -d, interpolation)[:, pad:pad + N, pad:pad + N].reshape(B, C, N, N)

    total = place(patches.astype(np.complex128))
    count = place(fp).real
    covered = count > threshold
    canvas = np.where(covered, total / np.where(covered, count, 1.0), 0.0)
    if steps:
        weight = np.maximum(place(np.abs(P) ** 2).real, 0.0)
        lit = weight >= lit_fraction * weight.max(axis=(-2, -1), keepdims=True)
        lit &= weight > 0
        safe = np.where(lit, weight, 1.0)
        for _ in range(int(steps)):
            F = far_field(P * back(canvas))
            modulus = np.sqrt(np.abs(F) ** 2 + MODULUS_FLOOR ** 2)
            psi = inverse_far_field(amp * F / modulus)
            canvas = np.where(lit, place(np.conj(P) * psi) / safe, canvas)
    return back(canvas).astype(out_dtype, copy=False)
