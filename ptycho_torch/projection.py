"""PyTorch version of ``ptycho.projection.group_projection`` (the overlap constraint followed by
per-group error-reduction projections onto the measured amplitudes); see that module for the
definition. Differentiable end to end, for any batch size; groups never mix."""

from __future__ import annotations

import torch

from ptycho.projection import DEFAULT_LIT_FRACTION, MODULUS_FLOOR
from ptycho_torch import helper

__all__ = ["inverse_far_field", "group_projection"]


def inverse_far_field(F: torch.Tensor) -> torch.Tensor:
    """Inverse of ``helper.far_field``: ``ifft2(ifftshift(F), norm="ortho")``."""
    return torch.fft.ifft2(torch.fft.ifftshift(F, dim=(-2, -1)), norm="ortho")


def _canvas_ops(offsets: torch.Tensor, N: int, pad: int, interpolation: str, C: int):
    """``place`` ((B, C, N, N) -> (B, L, L), summed over members) and ``back`` ((B, L, L) ->
    (B, C, N, N)) of ``group_reassemble`` for these offsets (B, C, 2)."""
    B = offsets.shape[0]
    L = N + 2 * pad
    if interpolation == "fourier":
        ay, ax, by, bx = helper._fourier_canvas_matrices(offsets, N, pad)

        def place(arr):
            return (ay @ arr.to(ay.dtype) @ ax.transpose(-1, -2)).sum(dim=1)

        def back(canvas):
            return by @ canvas[:, None].to(by.dtype) @ bx.transpose(-1, -2)
        return place, back

    flat = offsets.reshape(B * C, 2)

    def place(arr):
        arr = arr.expand(B, C, N, N).reshape(B * C, N, N)
        padded = torch.nn.functional.pad(arr, (pad, pad, pad, pad))
        return helper.translate(padded, flat, "bilinear").reshape(B, C, L, L).sum(dim=1)

    def back(canvas):
        rep = canvas[:, None].expand(B, C, L, L).reshape(B * C, L, L)
        out = helper.translate(rep, -flat, "bilinear")[:, pad:pad + N, pad:pad + N]
        return out.reshape(B, C, N, N)
    return place, back


def group_projection(patches: torch.Tensor, offsets: torch.Tensor, probe: torch.Tensor,
                     target_amplitude: torch.Tensor, steps: int, pad: int | None = None,
                     interpolation: str = "bilinear", footprint: torch.Tensor | None = None,
                     threshold: float | None = None,
                     lit_fraction: float = DEFAULT_LIT_FRACTION) -> torch.Tensor:
    """patches (B, C, N, N) complex, offsets (B, C, 2), probe (N, N) complex, target_amplitude
    (B, C, N, N) real → (B, C, N, N) complex; ``steps = 0`` is ``helper.group_reassemble``."""
    helper._check_interpolation(interpolation)
    if patches.dim() != 4 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"group_projection expects patches of shape (B, C, N, N), got "
                         f"{tuple(patches.shape)}")
    B, C, N, _ = patches.shape
    if tuple(offsets.shape) != (B, C, 2):
        raise ValueError(f"group_projection needs offsets of shape {(B, C, 2)}, got "
                         f"{tuple(offsets.shape)}")
    if tuple(target_amplitude.shape) != tuple(patches.shape):
        raise ValueError(f"target_amplitude must have the patches' shape {tuple(patches.shape)}, "
                         f"got {tuple(target_amplitude.shape)}")
    if tuple(probe.shape) != (N, N):
        raise ValueError(f"probe must have shape {(N, N)}, got {tuple(probe.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not 0.0 < float(lit_fraction) < 1.0:
        raise ValueError(f"lit_fraction must be in (0, 1), got {lit_fraction}")
    if steps == 0 or B == 0:
        return helper.group_reassemble(patches, offsets, pad=pad, interpolation=interpolation,
                                       footprint=footprint, threshold=threshold)
    pad = N // 2 if pad is None else int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if threshold is None:
        from ptycho.physics import FOURIER_OVERLAP_THRESHOLD, OVERLAP_THRESHOLD

        threshold = OVERLAP_THRESHOLD if interpolation == "bilinear" else FOURIER_OVERLAP_THRESHOLD
    rdtype = helper._real_dtype(patches)
    cdtype = torch.complex128 if rdtype == torch.float64 else torch.complex64
    if footprint is None:
        footprint = torch.ones(N, N, dtype=rdtype, device=patches.device)
    place, back = _canvas_ops(offsets.to(rdtype), N, pad, interpolation, C)
    count = place(footprint.to(rdtype)[None, None]).real
    covered = count > float(threshold)
    canvas = place(patches.to(cdtype))
    canvas = torch.where(covered, canvas / torch.where(covered, count, torch.ones_like(count)),
                         torch.zeros_like(canvas))
    P = probe.to(cdtype)
    weight = place((P.real ** 2 + P.imag ** 2)[None, None]).real.clamp(min=0.0)
    peak = weight.amax(dim=(-2, -1), keepdim=True)
    lit = (weight >= float(lit_fraction) * peak) & (weight > 0)
    safe = torch.where(lit, weight, torch.ones_like(weight))
    amp = target_amplitude.to(rdtype)
    for _ in range(steps):
        F = helper.far_field(helper.illuminate(back(canvas).to(cdtype), P))
        modulus = torch.sqrt(F.real ** 2 + F.imag ** 2 + MODULUS_FLOOR ** 2)
        psi = inverse_far_field(amp * F / modulus)
        canvas = torch.where(lit, place(P.conj() * psi) / safe, canvas)
    return back(canvas).to(cdtype)
