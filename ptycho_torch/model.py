"""The PtychoPINN network and its differentiable physics, as one ``torch.nn.Module``.

Architecture (identical to the TensorFlow backend, layer for layer, so weights convert one-to-one;
see "Network" in ``docs/api_contract.md``; the layers come from
``ptycho.architecture.conv_layers``). ``decoder="reference"``: an encoder of
``n_stages = log2(N) - 3`` stages [conv3x3 → ReLU → conv3x3 → ReLU → maxpool 2] and two decoders
(amplitude, phase) of ``n_stages - 1`` stages [conv → ReLU → conv → ReLU → nearest upsample 2],
each ending in a 3x3 conv to C channels that predicts the central N/2 x N/2 of every patch. With
``probe_big`` a border branch (one more upsample, then a conv) fills the rest of the N x N patch.
``decoder="unet"``: the same encoder, a bottleneck stage ``mid``, one decoder up to full resolution
with skip connections (``dec{j}``) and the heads ``amp_out`` / ``phase_out`` on the N x N features.

Module attribute names equal the TensorFlow layer names (``enc0_conv0``, ``amp_dec0_conv0``,
``amp_out``, ``amp_big_out``, ...), so ``state_dict`` keys are ``<layer>.weight`` / ``<layer>.bias``.
Extra state: ``log_intensity_scale`` (scalar) and ``probe`` ((N, N, 2) float: real and imaginary
parts), each an ``nn.Parameter`` when the config makes it trainable and a buffer otherwise.

Forward (``docs/api_contract.md``, "Model forward"): X (B, C, N, N) normalised amplitudes and
offsets (B, C, 2) → object patches O = a·exp(iφ) (complex), reassembled per group when C > 1
(with ``projection_steps`` K > 0: averaged per group and projected K times onto the measured
amplitudes, ``ptycho_torch.projection``);
predicted amplitude Â = |far_field(P·O)|; predicted counts λ = (s·Â)².
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ptycho.architecture import check_decoder, conv_layers, network_filters
from ptycho_torch import helper
from ptycho_torch.projection import group_projection

__all__ = ["ModelOutput", "PtychoPINN", "network_filters", "count_parameters"]

AMP_ACTIVATIONS = ("sigmoid", "softplus", "swish")


class ModelOutput(NamedTuple):
    """What ``PtychoPINN.forward`` returns; all tensors are (B, C, N, N).

    obj: complex object patches after the overlap constraint (the model's reconstruction).
    amplitude: predicted diffraction amplitude Â (real, normalised units).
    counts: predicted photon counts λ = (s·Â)² (real).
    patch_amp, patch_phase: the network's own amplitude and phase (real, before reassembly;
        zero outside the central block without ``probe_big``), used by the supervised loss.
    """

    obj: torch.Tensor
    amplitude: torch.Tensor
    counts: torch.Tensor
    patch_amp: torch.Tensor
    patch_phase: torch.Tensor


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=True)
    # Glorot-uniform weights and zero biases: the Keras defaults, so both backends start alike.
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _cfg(config: Any, name: str, default: Any = None) -> Any:
    return getattr(config, name, default)


class PtychoPINN(nn.Module):
    """Network + physics for one trained model.

    Parameters
    ----------
    model_config : ptycho.config.ModelConfig
        N, gridsize, amp_activation, probe_big, probe_mask, probe_trainable,
        intensity_scale_trainable, mode, interpolation, group_pad, filter_scale, decoder,
        per_pattern, projection_steps.
    probe : np.ndarray (N, N) complex
        The probe; it is normalised with ``ptycho.probe.normalize_probe`` (Σ|P|² = (N/2)²).
    intensity_scale : float
        Initial s (> 0, finite); λ = (s·Â)². Stored as its logarithm.
    normalization_factor : float
        The input normalisation f of the training data (> 0); targets are K = (X·f)².
    """

    def __init__(self, model_config: Any, probe: np.ndarray, intensity_scale: float,
                 normalization_factor: float) -> None:
        super().__init__()
        from ptycho.probe import normalize_probe, probe_mask

        N = int(_cfg(model_config, "N"))
        gridsize = int(_cfg(model_config, "gridsize", 1))
        self.N = N
        self.gridsize = gridsize
        self.C = gridsize * gridsize
        self.amp_activation = str(_cfg(model_config, "amp_activation", "sigmoid"))
        if self.amp_activation not in AMP_ACTIVATIONS:
            raise ValueError(
                f"amp_activation must be one of {AMP_ACTIVATIONS}, got {self.amp_activation!r}")
        self.probe_big = bool(_cfg(model_config, "probe_big", True))
        self.use_probe_mask = bool(_cfg(model_config, "probe_mask", False))
        self.mode = str(_cfg(model_config, "mode", "unsupervised"))
        self.interpolation = str(_cfg(model_config, "interpolation", "bilinear"))
        group_pad = _cfg(model_config, "group_pad", None)
        self.group_pad = N // 2 if group_pad is None else int(group_pad)

        intensity_scale = float(intensity_scale)
        if not math.isfinite(intensity_scale) or intensity_scale <= 0:
            raise ValueError(f"intensity_scale must be finite and > 0, got {intensity_scale}")
        normalization_factor = float(normalization_factor)
        if not math.isfinite(normalization_factor) or normalization_factor <= 0:
            raise ValueError(
                f"normalization_factor must be finite and > 0, got {normalization_factor}")
        probe = np.asarray(probe)
        if probe.shape != (N, N):
            raise ValueError(f"probe must have shape {(N, N)} for N={N}, got {probe.shape}")
        if not np.all(np.isfinite(probe)):
            raise ValueError("probe contains NaN or Inf")

        self.filter_scale = float(_cfg(model_config, "filter_scale", 1.0))
        self.decoder = check_decoder(_cfg(model_config, "decoder", "reference"))
        self.per_pattern = bool(_cfg(model_config, "per_pattern", False))
        steps = _cfg(model_config, "projection_steps", 0)
        if isinstance(steps, bool) or int(steps) != steps or steps < 0:
            raise ValueError(f"projection_steps must be an integer >= 0, got {steps!r}")
        self.projection_steps = int(steps)
        self.n_stages = len(network_filters(N, self.filter_scale)[0])
        planes = 1 if self.per_pattern else self.C
        for name, cin, cout in conv_layers(N, planes, self.probe_big, self.filter_scale,
                                           self.decoder):
            setattr(self, name, _conv(cin, cout))

        log_s = torch.tensor(math.log(intensity_scale), dtype=torch.float32)
        if bool(_cfg(model_config, "intensity_scale_trainable", False)):
            self.log_intensity_scale = nn.Parameter(log_s)
        else:
            self.register_buffer("log_intensity_scale", log_s)
        p = np.asarray(normalize_probe(probe.astype(np.complex64)), dtype=np.complex64)
        probe_t = torch.from_numpy(np.stack([p.real, p.imag], axis=-1).astype(np.float32))
        if bool(_cfg(model_config, "probe_trainable", False)):
            self.probe = nn.Parameter(probe_t)
        else:
            self.register_buffer("probe", probe_t)
        self.register_buffer("probe_support",
                             torch.from_numpy(np.asarray(probe_mask(N), dtype=np.float32)),
                             persistent=False)
        self.register_buffer("central", helper.central_mask(N), persistent=False)
        self.register_buffer("normalization_factor",
                             torch.tensor(normalization_factor, dtype=torch.float64),
                             persistent=False)

    # ------------------------------------------------------------------ scales and targets
    @property
    def intensity_scale(self) -> torch.Tensor:
        """s = exp(log_intensity_scale), a 0-d tensor (differentiable when trainable)."""
        return torch.exp(self.log_intensity_scale)

    def intensity_scale_value(self) -> float:
        """The current intensity scale as a Python float."""
        return float(torch.exp(self.log_intensity_scale.detach().double()).item())

    def target_counts(self, X: torch.Tensor) -> torch.Tensor:
        """Measured counts K = (X·f)² from normalised amplitudes X, in X's dtype."""
        return (X * self.normalization_factor.to(X.dtype)) ** 2

    def effective_probe(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The probe the physics uses: renormalised to Σ|P|² = (N/2)², masked if configured.

        Returns (N, N) complex (complex64 for float32, complex128 for float64).
        """
        pr = self.probe.to(dtype)
        p = torch.complex(pr[..., 0], pr[..., 1])
        power = torch.sum(pr[..., 0] ** 2 + pr[..., 1] ** 2)
        p = p * ((self.N / 2) / torch.sqrt(power)).to(dtype)
        if self.use_probe_mask:
            p = p * self.probe_support.to(dtype)
        return p

    # ------------------------------------------------------------------ network
    def _activate_amp(self, t: torch.Tensor) -> torch.Tensor:
        if self.amp_activation == "sigmoid":
            return torch.sigmoid(t)
        if self.amp_activation == "softplus":
            return nn.functional.softplus(t)
        return nn.functional.silu(t)

    def _decode(self, d: str, feats: torch.Tensor) -> torch.Tensor:
        h = feats
        for j in range(self.n_stages - 1):
            h = torch.relu(getattr(self, f"{d}_dec{j}_conv0")(h))
            h = torch.relu(getattr(self, f"{d}_dec{j}_conv1")(h))
            h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
        act = self._activate_amp if d == "amp" else (lambda t: math.pi * torch.tanh(t))
        central = act(getattr(self, f"{d}_out")(h))  # (B, C, N/2, N/2)
        q = self.N // 4
        out = nn.functional.pad(central, (q, q, q, q))
        if self.probe_big:
            big = act(getattr(self, f"{d}_big_out")(
                nn.functional.interpolate(h, scale_factor=2, mode="nearest")))
            out = out + (1 - self.central.to(big.dtype)) * big
        return out

    def _encode(self, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled encoder output and the pre-pool features of every stage (full size first)."""
        skips = []
        for i in range(self.n_stages):
            h = torch.relu(getattr(self, f"enc{i}_conv0")(h))
            h = torch.relu(getattr(self, f"enc{i}_conv1")(h))
            skips.append(h)
            h = nn.functional.max_pool2d(h, 2)
        return h, skips

    def _decode_unet(self, h: torch.Tensor,
                     skips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.mid_conv0(h))
        h = torch.relu(self.mid_conv1(h))
        for j, skip in enumerate(skips[::-1]):
            h = torch.cat([nn.functional.interpolate(h, scale_factor=2, mode="nearest"), skip], 1)
            h = torch.relu(getattr(self, f"dec{j}_conv0")(h))
            h = torch.relu(getattr(self, f"dec{j}_conv1")(h))
        amp = self._activate_amp(self.amp_out(h))
        phase = math.pi * torch.tanh(self.phase_out(h))
        if not self.probe_big:
            central = self.central.to(amp.dtype)
            amp, phase = amp * central, phase * central
        return amp, phase

    def network(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Amplitude a and phase φ, each (B, C, N, N) real, from X (B, C, N, N).

        With ``per_pattern`` every pattern is one (1, N, N) sample of the same network. The
        convolutions run on channels-last tensors: the same numbers, about three times faster
        on CPU (oneDNN) and the layout tensor cores expect on GPU.
        """
        shape = X.shape
        if self.per_pattern:
            X = X.reshape(-1, 1, self.N, self.N)
        h, skips = self._encode(X.contiguous(memory_format=torch.channels_last))
        if self.decoder == "unet":
            amp, phase = self._decode_unet(h, skips)
        else:
            amp, phase = self._decode("amp", h), self._decode("phase", h)
        return amp.contiguous().reshape(shape), phase.contiguous().reshape(shape)

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, X: torch.Tensor, offsets: torch.Tensor) -> None:
        if X.dim() != 4 or tuple(X.shape[1:]) != (self.C, self.N, self.N):
            raise ValueError(
                f"X must have shape (B, {self.C}, {self.N}, {self.N}) for gridsize "
                f"{self.gridsize}, N={self.N}; got {tuple(X.shape)}")
        if tuple(offsets.shape) != (X.shape[0], self.C, 2):
            raise ValueError(
                f"offsets must have shape {(X.shape[0], self.C, 2)} (one (dy, dx) per pattern); "
                f"got {tuple(offsets.shape)}")

    def forward(self, X: torch.Tensor, offsets: torch.Tensor) -> ModelOutput:
        """X (B, C, N, N) normalised amplitudes; offsets (B, C, 2) coords_relative (dy, dx)."""
        self._check_inputs(X, offsets)
        amp, phase = self.network(X)
        dtype = self.log_intensity_scale.dtype
        # The physics (FFTs, interpolation) always runs in full precision, also under autocast.
        with torch.autocast(device_type=X.device.type, enabled=False):
            amp = amp.to(dtype)
            phase = phase.to(dtype)
            obj = torch.polar(amp, phase)
            probe = self.effective_probe(dtype)
            footprint = None if self.probe_big else self.central.to(dtype)
            if self.projection_steps:
                # Measured amplitude in the units of |F(P·O)|: counts (X·f)² = (s·Â)².
                target = (X.to(dtype) * self.normalization_factor.to(dtype)
                          / self.intensity_scale.to(dtype))
                obj = group_projection(obj, offsets.to(dtype), probe, target,
                                       self.projection_steps, pad=self.group_pad,
                                       interpolation=self.interpolation, footprint=footprint)
            elif self.C > 1:
                obj = helper.group_reassemble(obj, offsets.to(dtype), pad=self.group_pad,
                                              interpolation=self.interpolation,
                                              footprint=footprint)
            F = helper.far_field(helper.illuminate(obj, probe))
            # Counts from |F|^2 directly: the same value as (s·|F|)^2 with a gradient that stays
            # finite where F = 0.
            intensity = F.real ** 2 + F.imag ** 2
            amplitude = torch.abs(F)
            counts = self.intensity_scale.to(dtype) ** 2 * intensity
        return ModelOutput(obj, amplitude, counts, amp, phase)

    @torch.no_grad()
    def predict_object(self, X: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Object patches only (B, C, N, N) complex, without gradients."""
        return self.forward(X, offsets).obj
