"""Differentiable ptychography physics in PyTorch.

The same operations, names and conventions as the NumPy reference ``ptycho.physics`` (see
``docs/api_contract.md``), written with torch tensors so that gradients flow through them:

* ``translate`` moves content by ``(+dy, +dx)``: ``out[y, x] = in[y - dy, x - dx]``, bilinear (zero
  fill outside the image) or Fourier (phase ramp on a centred, zero-padded ``(2H, 2W)`` canvas).
* ``extract_patches`` samples ``N x N`` patches centred on object-pixel positions.
* ``group_reassemble`` is the overlap constraint of the model: the patches of one group are
  averaged on a canvas of their own (never mixed across the batch) and cut back out.
* ``illuminate``, ``far_field`` (unitary FFT, zero frequency at ``(N//2, N//2)``),
  ``diffraction_amplitude``, ``poisson_nll`` / ``poisson_nll_full`` and ``intensity_scale``.

Offsets and positions are always ``(dy, dx)`` / ``(y, x)`` pairs in object pixels, row first.
Real inputs stay real and complex inputs stay complex; dtypes are preserved.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "INTERPOLATIONS",
    "translate",
    "extract_patches",
    "group_reassemble",
    "illuminate",
    "far_field",
    "diffraction_amplitude",
    "poisson_nll",
    "poisson_nll_full",
    "intensity_scale",
    "central_mask",
]

INTERPOLATIONS = ("bilinear", "fourier")


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")


def _real_dtype(t: torch.Tensor) -> torch.dtype:
    """The real dtype matching ``t`` (float32 for complex64, float64 for complex128)."""
    return t.real.dtype if t.is_complex() else t.dtype


def _check_offsets(images: torch.Tensor, offsets: torch.Tensor) -> None:
    if images.dim() != 3:
        raise ValueError(f"translate expects images of shape (B, H, W), got {tuple(images.shape)}")
    if offsets.dim() != 2 or offsets.shape[-1] != 2:
        raise ValueError(f"translate expects offsets of shape (B, 2), got {tuple(offsets.shape)}")
    if offsets.shape[0] != images.shape[0]:
        raise ValueError(
            f"translate needs one offset per image: got {offsets.shape[0]} offsets for "
            f"{images.shape[0]} images (offsets are never reused or broadcast)")


def _interp_axis(img: torch.Tensor, shift: torch.Tensor, axis: int) -> torch.Tensor:
    """Linear interpolation of ``img`` (B, H, W) along ``axis`` (1 or 2), moving content by
    ``shift`` (B,) pixels; samples outside the image read as zero."""
    B = img.shape[0]
    size = img.shape[axis]
    src = -shift.to(_real_dtype(img))
    base = torch.floor(src)
    frac = src - base  # in [0, 1); carries the gradient with respect to the shift
    idx0 = torch.arange(size, device=img.device)[None, :] + base.to(torch.long)[:, None]  # (B, S)
    out = None
    for k, weight in ((0, 1.0 - frac), (1, frac)):
        idx = idx0 + k
        valid = (idx >= 0) & (idx < size)
        idx_c = idx.clamp(0, size - 1)
        if axis == 1:
            gathered = torch.gather(img, 1, idx_c[:, :, None].expand(B, size, img.shape[2]))
            mask = valid[:, :, None]
            w = weight[:, None, None]
        else:
            gathered = torch.gather(img, 2, idx_c[:, None, :].expand(B, img.shape[1], size))
            mask = valid[:, None, :]
            w = weight[:, None, None]
        term = gathered * mask.to(_real_dtype(img)) * w
        out = term if out is None else out + term
    return out


def _translate_bilinear(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    rows = _interp_axis(images, offsets[:, 0], axis=1)
    return _interp_axis(rows, offsets[:, 1], axis=2)


def _translate_fourier(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    B, H, W = images.shape
    top, left = H // 2, W // 2
    padded = torch.nn.functional.pad(images, (left, W - left, top, H - top))
    rdtype = _real_dtype(images)
    ky = torch.fft.fftfreq(2 * H, device=images.device, dtype=torch.float64).to(rdtype)
    kx = torch.fft.fftfreq(2 * W, device=images.device, dtype=torch.float64).to(rdtype)
    off = offsets.to(rdtype)
    phase = -2.0 * math.pi * (ky[None, :, None] * off[:, 0, None, None]
                              + kx[None, None, :] * off[:, 1, None, None])
    ramp = torch.polar(torch.ones_like(phase), phase)
    shifted = torch.fft.ifft2(torch.fft.fft2(padded) * ramp)
    out = shifted[:, top:top + H, left:left + W]
    return out if images.is_complex() else out.real


def translate(images: torch.Tensor, offsets: torch.Tensor,
              interpolation: str = "bilinear") -> torch.Tensor:
    """Move each image's content by its own ``(dy, dx)``: ``out[y, x] = in[y - dy, x - dx]``.

    images: (B, H, W) real or complex. offsets: (B, 2) float, rows then columns, in pixels; exactly
    one per image (a different count raises ``ValueError``). ``"bilinear"`` fills with zero
    outside the image; ``"fourier"`` zero-pads to (2H, 2W) centred, multiplies the FFT by
    ``exp(-2πi (ky dy + kx dx))`` and crops back (real images return the real part).
    Differentiable with respect to both images and offsets. Returns the shape and dtype of images.
    """
    _check_interpolation(interpolation)
    _check_offsets(images, offsets)
    if interpolation == "bilinear":
        return _translate_bilinear(images, offsets)
    return _translate_fourier(images, offsets)


def extract_patches(obj: torch.Tensor, positions: torch.Tensor, N: int,
                    interpolation: str = "bilinear") -> torch.Tensor:
    """Cut ``N x N`` patches out of an object at sub-pixel centres.

    obj: (H, W) real or complex; positions: (M, 2) float (y, x) patch centres in object pixels.
    Returns (M, N, N) with ``out[m, i, j] = obj(y_m - N//2 + i, x_m - N//2 + j)``; pixels outside
    the object are 0. As in ``ptycho.physics.extract_patches``: bilinear is bilinear sampling of
    the zero-extended object; Fourier cuts a window of side ``N + 2*margin``
    (``ptycho.physics.window_margin``) at ``floor(position) - N//2 - margin``, multiplies it by
    the raised-cosine ``window_taper`` along both axes, translates it by the negative fractional
    part of the position and keeps the central N x N.
    """
    _check_interpolation(interpolation)
    if obj.dim() != 2:
        raise ValueError(f"extract_patches expects obj of shape (H, W), got {tuple(obj.shape)}")
    if positions.dim() != 2 or positions.shape[-1] != 2:
        raise ValueError(
            f"extract_patches expects positions of shape (M, 2), got {tuple(positions.shape)}")
    N = int(N)
    if N < 1:
        raise ValueError(f"patch side N must be a positive integer, got {N}")
    pos = positions.to(_real_dtype(obj))
    if interpolation == "bilinear":
        return _sample_bilinear(obj, pos - float(N // 2), N)
    from ptycho.physics import window_margin, window_taper

    margin = window_margin(N, interpolation)
    t = torch.as_tensor(window_taper(N, interpolation), dtype=_real_dtype(obj), device=obj.device)
    base = torch.floor(pos)
    frac = pos - base
    window = _sample_bilinear(obj, base - float(N // 2 + margin), N + 2 * margin)
    # The taper is 1 on the central N x N, so integer positions still give exact slices.
    moved = translate(window * (t[:, None] * t[None, :]), -frac, interpolation)
    return moved[:, margin:margin + N, margin:margin + N]


def _sample_bilinear(obj: torch.Tensor, origin: torch.Tensor, N: int) -> torch.Tensor:
    """``out[m, i, j] = obj(origin[m, 0] + i, origin[m, 1] + j)``, bilinear, zero outside."""
    H, W = obj.shape
    base = torch.floor(origin)
    frac = origin - base
    grid = torch.arange(N, device=obj.device)
    r0 = base[:, 0].to(torch.long)[:, None] + grid[None, :]  # (M, N)
    c0 = base[:, 1].to(torch.long)[:, None] + grid[None, :]
    rdtype = _real_dtype(obj)
    out = None
    for dr, wr in ((0, 1.0 - frac[:, 0]), (1, frac[:, 0])):
        r = r0 + dr
        rv = ((r >= 0) & (r < H)).to(rdtype)
        rc = r.clamp(0, H - 1)
        for dc, wc in ((0, 1.0 - frac[:, 1]), (1, frac[:, 1])):
            c = c0 + dc
            cv = ((c >= 0) & (c < W)).to(rdtype)
            cc = c.clamp(0, W - 1)
            vals = obj[rc[:, :, None], cc[:, None, :]]  # (M, N, N)
            w = (wr[:, None, None] * wc[:, None, None]) * rv[:, :, None] * cv[:, None, :]
            term = vals * w
            out = term if out is None else out + term
    return out


def central_mask(N: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """(N, N) mask with ones on the central N/2 x N/2 block (rows/cols N/4 … 3N/4-1)."""
    mask = torch.zeros(N, N, dtype=dtype, device=device)
    lo, hi = N // 4, N // 4 + N // 2
    mask[lo:hi, lo:hi] = 1
    return mask


def _shift_kernels(offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Kernels of ``translate``'s Fourier shift on a periodic grid of ``size`` pixels.

    offsets (..., 2) real → (..., 2, size) complex: ``k[j] = ifft(exp(-2πi f d))[j]``, so that
    shifting a zero-padded signal ``x`` gives ``out[m] = Σ_n x[n] k[(m - n) mod size]``."""
    f = torch.fft.fftfreq(size, device=offsets.device, dtype=torch.float64).to(offsets.dtype)
    phase = -2.0 * math.pi * offsets[..., None] * f
    return torch.fft.ifft(torch.polar(torch.ones_like(phase), phase), dim=-1)


def _fourier_canvas_matrices(offsets: torch.Tensor, N: int, pad: int):
    """``translate``'s Fourier shift as separable matrices for each member's offset (B, C, 2):
    ``ay, ax`` (B, C, L, N) place an N x N patch on the (L, L) canvas (``ay @ p @ axᵀ``),
    ``by, bx`` (B, C, N, L) cut it back out (``by @ canvas @ bxᵀ``), with ``L = N + 2·pad``."""
    from ptycho.physics import shift_matrix_indices

    L = N + 2 * pad
    kernels = _shift_kernels(offsets, 2 * L)  # (B, C, 2, 2L)
    back_kernels = _shift_kernels(-offsets, 2 * L)
    place_idx, back_idx = (torch.from_numpy(i).to(offsets.device)
                           for i in shift_matrix_indices(L, N, pad))  # (L, N), (N, L)
    ay, ax = kernels[..., 0, :][..., place_idx], kernels[..., 1, :][..., place_idx]
    by, bx = back_kernels[..., 0, :][..., back_idx], back_kernels[..., 1, :][..., back_idx]
    return ay, ax, by, bx


def _group_reassemble_fourier(patches: torch.Tensor, offsets: torch.Tensor, pad: int,
                              footprint: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fourier ``group_reassemble`` as separable shift matrices; the same numbers as ``translate``.

    ``translate`` zero-pads an (L, L) canvas to (2L, 2L), multiplies its spectrum by a separable
    phase ramp and crops back, which is ``T_y · image · T_xᵀ`` with Toeplitz matrices cut from
    one shift kernel per axis (``_shift_kernels``). Placing an N x N patch on the canvas and
    cutting it back out then take two small matrix products each, instead of two (2L, 2L) FFTs
    per canvas.
    """
    ay, ax, by, bx = _fourier_canvas_matrices(offsets, patches.shape[-1], pad)
    wide = ay.dtype
    total = (ay @ patches.to(wide) @ ax.transpose(-1, -2)).sum(dim=1)  # (B, L, L)
    count = (ay @ footprint.to(wide) @ ax.transpose(-1, -2)).real.sum(dim=1)
    if not patches.is_complex():
        total = total.real
    keep = count > threshold
    safe = torch.where(keep, count, torch.ones_like(count))
    avg = torch.where(keep, total / safe, torch.zeros_like(total))
    back = by @ avg[:, None].to(wide) @ bx.transpose(-1, -2)  # (B, C, N, N)
    return back if patches.is_complex() else back.real


def group_reassemble(patches: torch.Tensor, offsets: torch.Tensor, pad: int | None = None,
                     interpolation: str = "bilinear",
                     footprint: torch.Tensor | None = None,
                     threshold: float | None = None) -> torch.Tensor:
    """Overlap constraint: average the C patches of each group where they overlap.

    patches: (B, C, N, N) real or complex; offsets: (B, C, 2) (dy, dx) = coords_relative of each
    member relative to its group centre. For each group independently: a canvas of side
    ``N + 2*pad`` (pad default N//2); each patch is zero-padded to the canvas centre and translated
    by its offset; ``footprint`` (N, N) (default ones) is placed the same way into a count canvas;
    the average ``sum / count`` (0 where count <= threshold) is translated back by ``-offset``
    and the central N x N cut out. ``threshold`` defaults to ``ptycho.physics.OVERLAP_THRESHOLD``
    (1e-3) for bilinear and ``FOURIER_OVERLAP_THRESHOLD`` (0.5) for Fourier, whose shifted
    footprint rings beyond its edge. Returns (B, C, N, N) of the patches' dtype (empty for
    B = 0). Groups never mix, whatever the batch size. Fourier is computed as separable shift
    matrices (``_group_reassemble_fourier``), the same numbers at a fraction of the cost.
    """
    _check_interpolation(interpolation)
    if patches.dim() != 4:
        raise ValueError(
            f"group_reassemble expects patches of shape (B, C, N, N), got {tuple(patches.shape)}")
    B, C, N, N2 = patches.shape
    if N != N2:
        raise ValueError(f"group_reassemble expects square patches, got {N}x{N2}")
    if tuple(offsets.shape) != (B, C, 2):
        raise ValueError(
            f"group_reassemble needs offsets of shape (B, C, 2) = {(B, C, 2)} matching patches "
            f"{tuple(patches.shape)}, got {tuple(offsets.shape)}")
    pad = N // 2 if pad is None else int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if threshold is None:
        from ptycho.physics import FOURIER_OVERLAP_THRESHOLD, OVERLAP_THRESHOLD

        threshold = OVERLAP_THRESHOLD if interpolation == "bilinear" else FOURIER_OVERLAP_THRESHOLD
    threshold = float(threshold)
    rdtype = _real_dtype(patches)
    if footprint is None:
        footprint = torch.ones(N, N, dtype=rdtype, device=patches.device)
    elif tuple(footprint.shape) != (N, N):
        raise ValueError(f"footprint must have shape {(N, N)}, got {tuple(footprint.shape)}")
    footprint = footprint.to(device=patches.device, dtype=rdtype)
    L = N + 2 * pad
    if B == 0:
        return patches.clone()  # no groups: nothing to average (FFT libraries reject empty input)
    if interpolation == "fourier":
        return _group_reassemble_fourier(patches, offsets.to(rdtype), pad, footprint, threshold)
    flat_off = offsets.reshape(B * C, 2).to(rdtype)
    padded = torch.nn.functional.pad(patches.reshape(B * C, N, N), (pad, pad, pad, pad))
    placed = translate(padded, flat_off, interpolation).reshape(B, C, L, L)
    fp = torch.nn.functional.pad(footprint, (pad, pad, pad, pad))[None].expand(B * C, L, L)
    counts = translate(fp, flat_off, interpolation).reshape(B, C, L, L)
    total = placed.sum(dim=1)  # (B, L, L): summed within each group only
    count = counts.sum(dim=1)
    keep = count > threshold
    safe = torch.where(keep, count, torch.ones_like(count))
    avg = torch.where(keep, total / safe, torch.zeros_like(total))
    avg = avg[:, None].expand(B, C, L, L).reshape(B * C, L, L)
    back = translate(avg, -flat_off, interpolation)
    return back[:, pad:pad + N, pad:pad + N].reshape(B, C, N, N)


def illuminate(obj_patches: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """Exit wave ``probe * obj_patches``, broadcast over leading axes; probe (N, N)."""
    return probe * obj_patches


def far_field(psi: torch.Tensor) -> torch.Tensor:
    """Unitary far field ``fftshift(fft2(psi, norm="ortho"))`` over the last two axes."""
    return torch.fft.fftshift(torch.fft.fft2(psi, norm="ortho"), dim=(-2, -1))


def diffraction_amplitude(obj_patches: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """``|far_field(probe * obj_patches)|``; real, same leading shape as obj_patches."""
    return torch.abs(far_field(illuminate(obj_patches, probe)))


def poisson_nll(pred_counts: torch.Tensor, counts: torch.Tensor,
                floor: float = 1e-8) -> torch.Tensor:
    """Elementwise Poisson NLL without the constant: ``λ - K log λ`` with ``λ = max(pred, floor)``."""
    lam = torch.clamp(pred_counts, min=floor)
    return lam - counts * torch.log(lam)


def poisson_nll_full(pred_counts: torch.Tensor, counts: torch.Tensor,
                     floor: float = 1e-8) -> torch.Tensor:
    """Elementwise full Poisson NLL ``λ - K log λ + log K!`` (comparable across runs)."""
    return poisson_nll(pred_counts, counts, floor) + torch.lgamma(counts + 1.0)


def intensity_scale(mean_photons: float, N: int) -> float:
    """``sqrt(mean_photons) / (N / 2)``: maps normalised amplitudes to photon-count amplitudes."""
    mean_photons = float(mean_photons)
    if not math.isfinite(mean_photons) or mean_photons <= 0:
        raise ValueError(f"mean_photons must be finite and > 0, got {mean_photons}")
    return math.sqrt(mean_photons) / (N / 2)
