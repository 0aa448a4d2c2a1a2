"""The PtychoPINN network and its differentiable physics as a Keras 3 model (TensorFlow backend).

Built only by :func:`build_model`; nothing is created at import time and no state is shared
between models: the intensity scale, the probe and every setting live in the model instance, so
two models with different settings in one process are independent.

Architecture (``docs/api_contract.md``, "Network"; identical to ``ptycho_torch.model`` layer for
layer so that weights convert one-to-one; the layers come from
``ptycho.architecture.conv_layers``). ``decoder="reference"``: an encoder of
``n_stages = log2(N) - 3`` stages [conv3×3 → ReLU → conv3×3 → ReLU → maxpool 2] and two decoders
(``amp``, ``phase``) of ``n_stages - 1`` stages [conv → ReLU → conv → ReLU → nearest upsample 2],
each ending in a 3×3 conv to ``C`` channels predicting the central ``N/2×N/2`` of each patch. With
``probe_big`` a border branch (one more nearest upsample, then ``{d}_big_out``) fills the rest of
the patch. The activation (amplitude: sigmoid | softplus | swish; phase: ``π·tanh``) is applied to
both the central and the border output. Layer names are the contract names (``enc0_conv0``,
``amp_dec0_conv1``, ``phase_out``, ``amp_big_out``, ...). ``decoder="unet"``: the same encoder, a
bottleneck stage ``mid``, one decoder up to full resolution whose stages ``dec{j}`` take the
upsampled features concatenated with the encoder features of the same size, and the heads
``amp_out`` / ``phase_out`` on the ``N×N`` features. Extra weights: ``log_intensity_scale``
(scalar) and ``probe`` (``(N, N, 2)``: real and imaginary parts), trainable as configured.

Layout: Keras tensors are channels-last. Inputs are ``X`` ``(B, N, N, C)`` normalised
amplitudes and ``offsets`` ``(B, C, 2)`` (``coords_relative``, ``(dy, dx)`` in object pixels);
every output is ``(B, N, N, C)``. The physics (``ptycho.tf_helper``) runs channels-first.

Forward (``docs/api_contract.md``, "Model forward"):
``O = a·exp(iφ)`` → (``C > 1``) ``group_reassemble(O, offsets)`` with the central mask as
footprint when only the central block is predicted (with ``projection_steps`` K > 0:
``group_projection``, the same average followed by K projections onto the measured amplitudes,
``ptycho.projection``) → ``Â = |far_field(P·O)|`` with
``P = normalize(probe)`` (times the support mask of radius ``N/4`` when ``probe_mask``) →
``λ = (s·Â)²`` with ``s = exp(log_intensity_scale)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import keras
import tensorflow as tf

from ptycho import tf_helper as th
from ptycho.architecture import check_decoder, conv_layers, network_filters
from ptycho.tf_projection import group_projection

__all__ = ["PtychoPINN", "build_model", "network_filters", "AMP_ACTIVATIONS", "PRECISIONS"]

AMP_ACTIVATIONS = ("sigmoid", "softplus", "swish")
PRECISIONS = {"32": "float32", "64": "float64", "16-mixed": "mixed_float16",
              "bf16-mixed": "mixed_bfloat16"}
OUTPUT_KEYS = ("object", "amplitude", "counts", "patch_amp", "patch_phase")


def _positive_finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be finite and > 0, got {value!r}")
    return v


class PtychoPINN(keras.Model):
    """Network + physics of one model. Construct with :func:`build_model`.

    Call with ``(X, offsets)`` (tuple, list or dict with keys ``"X"``, ``"offsets"``); returns a
    dict of ``(B, N, N, C)`` tensors:

    * ``object``: complex object patches after the overlap constraint (the reconstruction);
    * ``amplitude``: predicted diffraction amplitude ``Â`` (normalised units);
    * ``counts``: predicted photon counts ``λ = (s·Â)²``;
    * ``patch_amp``, ``patch_phase``: the network's own amplitude and phase before reassembly
      (zero outside the central block without ``probe_big``), used by the supervised loss.
    """

    def __init__(self, *, N: int, gridsize: int, amp_activation: str, probe_big: bool,
                 probe_mask: bool, probe_trainable: bool, intensity_scale_trainable: bool,
                 mode: str, interpolation: str, group_pad: int | None, probe: np.ndarray,
                 intensity_scale: float, normalization_factor: float, precision: str = "32",
                 filter_scale: float = 1.0, decoder: str = "reference",
                 per_pattern: bool = False, projection_steps: int = 0,
                 name: str = "ptycho_pinn") -> None:
        super().__init__(name=name)
        from ptycho.probe import normalize_probe, probe_mask as support_mask

        enc, _ = network_filters(N, filter_scale)
        self.filter_scale = float(filter_scale)
        if isinstance(gridsize, bool) or int(gridsize) != gridsize or gridsize < 1:
            raise ValueError(f"gridsize must be an integer >= 1, got {gridsize!r}")
        if amp_activation not in AMP_ACTIVATIONS:
            raise ValueError(f"amp_activation must be one of {AMP_ACTIVATIONS}, got {amp_activation!r}")
        if interpolation not in th.INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {th.INTERPOLATIONS}, got {interpolation!r}")
        if mode not in ("unsupervised", "supervised"):
            raise ValueError(f"mode must be 'unsupervised' or 'supervised', got {mode!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.N = int(N)
        self.gridsize = int(gridsize)
        self.C = self.gridsize ** 2
        self.amp_activation = amp_activation
        self.probe_big = bool(probe_big)
        self.use_probe_mask = bool(probe_mask)
        self.mode = mode
        self.interpolation = interpolation
        self.group_pad = self.N // 2 if group_pad is None else int(group_pad)
        self.precision = precision
        # Physics dtype: float64 for precision "64", float32 otherwise (also under mixed precision).
        self.physics_dtype = "float64" if precision == "64" else "float32"
        self.normalization_factor = _positive_finite(normalization_factor, "normalization_factor")
        s0 = _positive_finite(intensity_scale, "intensity_scale")
        probe = np.asarray(probe)
        if probe.shape != (self.N, self.N):
            raise ValueError(f"probe must have shape ({self.N}, {self.N}) for N={self.N}, "
                             f"got {probe.shape}")
        if not np.all(np.isfinite(probe)):
            raise ValueError("probe contains NaN or Inf")
        self.n_stages = len(enc)

        policy = PRECISIONS[precision]
        self.decoder = check_decoder(decoder)
        self.per_pattern = bool(per_pattern)
        if isinstance(projection_steps, bool) or int(projection_steps) != projection_steps \
                or projection_steps < 0:
            raise ValueError(f"projection_steps must be an integer >= 0, got {projection_steps!r}")
        self.projection_steps = int(projection_steps)
        planes = 1 if self.per_pattern else self.C
        for name, _, cout in conv_layers(self.N, planes, self.probe_big, filter_scale,
                                         self.decoder):
            setattr(self, name, keras.layers.Conv2D(
                cout, 3, strides=1, padding="same", use_bias=True, name=name, dtype=policy,
                activation=None if name.endswith("_out") else "relu"))
        self.pool = keras.layers.MaxPooling2D(2, name="maxpool", dtype=policy)
        self.upsample = keras.layers.UpSampling2D(2, interpolation="nearest", name="upsample",
                                                  dtype=policy)

        pdtype = self.physics_dtype
        self.log_intensity_scale = self.add_weight(
            name="log_intensity_scale", shape=(), dtype=pdtype, initializer="zeros",
            trainable=bool(intensity_scale_trainable))
        self.log_intensity_scale.assign(math.log(s0))
        p = normalize_probe(probe)
        self.probe = self.add_weight(name="probe", shape=(self.N, self.N, 2), dtype=pdtype,
                                     initializer="zeros", trainable=bool(probe_trainable))
        self.probe.assign(np.stack([p.real, p.imag], axis=-1).astype(pdtype))
        self._support = np.asarray(support_mask(self.N), dtype=np.float64)
        self._central = np.zeros((self.N, self.N), np.float64)
        q = self.N // 4
        self._central[q:q + self.N // 2, q:q + self.N // 2] = 1.0

    # ------------------------------------------------------------------ scales and targets
    @property
    def intensity_scale(self):
        """``s = exp(log_intensity_scale)``, a scalar tensor (differentiable when trainable)."""
        return tf.exp(self.log_intensity_scale)

    def intensity_scale_value(self) -> float:
        """The current intensity scale as a Python float."""
        return float(np.exp(np.float64(keras.ops.convert_to_numpy(self.log_intensity_scale))))

    def target_counts(self, X):
        """Measured counts ``K = (X·f)²`` from normalised amplitudes X (any layout)."""
        X = tf.cast(X, self.physics_dtype)
        return tf.square(X * tf.cast(self.normalization_factor, X.dtype))

    def effective_probe(self):
        """The probe the physics uses: renormalised to ``Σ|P|² = (N/2)²``, then masked if
        configured. ``(N, N)`` complex64 (complex128 in precision "64")."""
        pr = tf.convert_to_tensor(self.probe)
        p = th.normalize_probe(tf.complex(pr[..., 0], pr[..., 1]))
        if self.use_probe_mask:
            p = p * tf.cast(self._support, p.dtype)
        return p

    def probe_value(self) -> np.ndarray:
        """The effective probe as a NumPy ``(N, N)`` complex array."""
        return np.asarray(self.effective_probe())

    # ------------------------------------------------------------------ network
    def _activate(self, d: str, t):
        if d == "phase":
            return math.pi * tf.tanh(t)
        if self.amp_activation == "sigmoid":
            return tf.sigmoid(t)
        if self.amp_activation == "softplus":
            return tf.nn.softplus(t)
        return tf.nn.silu(t)

    def _decode(self, d: str, feats):
        h = feats
        for j in range(self.n_stages - 1):
            h = getattr(self, f"{d}_dec{j}_conv0")(h)
            h = getattr(self, f"{d}_dec{j}_conv1")(h)
            h = self.upsample(h)
        pdtype = self.physics_dtype
        central = self._activate(d, tf.cast(getattr(self, f"{d}_out")(h), pdtype))
        out = th.pad_to_full(central, self.N)
        if self.probe_big:
            big = self._activate(d, tf.cast(getattr(self, f"{d}_big_out")(self.upsample(h)), pdtype))
            out = out + (1.0 - tf.constant(self._central[:, :, None], dtype=pdtype)) * big
        return out

    def _encode(self, h):
        """Pooled encoder output and the pre-pool features of every stage (full size first)."""
        skips = []
        for i in range(self.n_stages):
            h = getattr(self, f"enc{i}_conv0")(h)
            h = getattr(self, f"enc{i}_conv1")(h)
            skips.append(h)
            h = self.pool(h)
        return h, skips

    def _decode_unet(self, h, skips):
        h = self.mid_conv1(self.mid_conv0(h))
        for j, skip in enumerate(skips[::-1]):
            h = keras.ops.concatenate([self.upsample(h), skip], axis=-1)
            h = getattr(self, f"dec{j}_conv1")(getattr(self, f"dec{j}_conv0")(h))
        pdtype = self.physics_dtype
        amp = self._activate("amp", tf.cast(self.amp_out(h), pdtype))
        phase = self._activate("phase", tf.cast(self.phase_out(h), pdtype))
        if not self.probe_big:
            central = tf.constant(self._central[:, :, None], dtype=pdtype)
            amp, phase = amp * central, phase * central
        return amp, phase

    def _network(self, X):
        h, skips = self._encode(X)
        if self.decoder == "unet":
            return self._decode_unet(h, skips)
        return self._decode("amp", h), self._decode("phase", h)

    def network(self, X):
        """Amplitude and phase ``(B, N, N, C)`` from ``X`` ``(B, N, N, C)``.

        With ``per_pattern`` every pattern is one ``(N, N, 1)`` sample of the same network.
        """
        if not self.per_pattern:
            return self._network(X)
        B = tf.shape(X)[0]
        # (B, N, N, C) -> (B·C, N, N, 1) with the members of a group consecutive.
        planes = tf.reshape(tf.transpose(X, (0, 3, 1, 2)), (-1, self.N, self.N, 1))
        outputs = []
        for t in self._network(planes):
            t = tf.reshape(t, tf.stack([B, self.C, self.N, self.N]))
            outputs.append(tf.transpose(t, (0, 2, 3, 1)))
        return tuple(outputs)

    # ------------------------------------------------------------------ forward
    def _split_inputs(self, inputs):
        if isinstance(inputs, dict):
            missing = {"X", "offsets"} - set(inputs)
            if missing:
                raise ValueError(f"model inputs dict lacks {sorted(missing)}; expected keys 'X', 'offsets'")
            X, offsets = inputs["X"], inputs["offsets"]
        elif isinstance(inputs, (tuple, list)) and len(inputs) == 2:
            X, offsets = inputs
        else:
            raise ValueError("model inputs must be (X, offsets) or {'X': ..., 'offsets': ...}")
        X = tf.convert_to_tensor(X)
        offsets = tf.convert_to_tensor(offsets)
        want = (self.N, self.N, self.C)
        if X.shape.rank != 4 or tuple(X.shape[1:]) != want:
            raise ValueError(f"X must have shape (B, {self.N}, {self.N}, {self.C}) (channels-last, "
                             f"gridsize {self.gridsize}), got {tuple(X.shape)}")
        if offsets.shape.rank != 3 or tuple(offsets.shape[1:]) != (self.C, 2):
            raise ValueError(f"offsets must have shape (B, {self.C}, 2) (one (dy, dx) per pattern), "
                             f"got {tuple(offsets.shape)}")
        if X.shape[0] is not None and offsets.shape[0] is not None and X.shape[0] != offsets.shape[0]:
            raise ValueError(f"X has {X.shape[0]} groups but offsets has {offsets.shape[0]}")
        return X, offsets

    def call(self, inputs, training: bool = False):
        X, offsets = self._split_inputs(inputs)
        amp, phase = self.network(X)                                    # (B, N, N, C)
        pdtype = self.physics_dtype
        amp_cf, phase_cf = th.to_channels_first(amp), th.to_channels_first(phase)
        obj = tf.complex(amp_cf * tf.cos(phase_cf), amp_cf * tf.sin(phase_cf))
        probe = self.effective_probe()
        footprint = None if self.probe_big else tf.constant(self._central, dtype=pdtype)
        if self.projection_steps:
            # Measured amplitude in the units of |F(P·O)|: counts (X·f)² = (s·Â)².
            target = th.to_channels_first(tf.cast(X, pdtype)) * tf.cast(
                self.normalization_factor, pdtype) / tf.cast(self.intensity_scale, pdtype)
            obj = group_projection(obj, tf.cast(offsets, pdtype), probe, target,
                                   self.projection_steps, pad=self.group_pad,
                                   interpolation=self.interpolation, footprint=footprint)
        elif self.C > 1:
            obj = th.group_reassemble(obj, tf.cast(offsets, pdtype), pad=self.group_pad,
                                      interpolation=self.interpolation, footprint=footprint)
        F = th.far_field(th.illuminate(obj, probe))
        intensity = tf.square(tf.math.real(F)) + tf.square(tf.math.imag(F))
        s = tf.cast(self.intensity_scale, pdtype)
        counts = tf.square(s) * intensity
        # |F| for reporting only; the loss uses the counts, whose gradient is finite at F = 0.
        amplitude = tf.stop_gradient(tf.abs(F))
        return {
            "object": th.to_channels_last(obj),
            "amplitude": th.to_channels_last(amplitude),
            "counts": th.to_channels_last(counts),
            "patch_amp": amp,
            "patch_phase": phase,
        }

    def build_by_calling(self) -> None:
        """Create every weight by one forward pass on a zero batch of one group."""
        self((np.zeros((1, self.N, self.N, self.C), np.float32),
              np.zeros((1, self.C, 2), np.float32)))

    def get_config(self) -> dict:
        """Settings (not weights) of this model; weights travel in ``.weights.h5``."""
        return {"N": self.N, "gridsize": self.gridsize, "amp_activation": self.amp_activation,
                "probe_big": self.probe_big, "probe_mask": self.use_probe_mask,
                "mode": self.mode, "interpolation": self.interpolation,
                "group_pad": self.group_pad, "precision": self.precision,
                "filter_scale": self.filter_scale, "decoder": self.decoder,
                "per_pattern": self.per_pattern, "projection_steps": self.projection_steps,
                "normalization_factor": self.normalization_factor}


def build_model(config, probe, intensity_scale, normalization_factor, *,
                precision: str = "32", name: str = "ptycho_pinn") -> PtychoPINN:
    """Build a new, independent PtychoPINN with all weights created.

    config: ``ptycho.config.ModelConfig`` (N, gridsize, amp_activation, probe_big, probe_mask,
    probe_trainable, intensity_scale_trainable, mode, interpolation, group_pad, filter_scale,
    decoder, per_pattern, projection_steps).
    probe: ``(N, N)`` complex, normalised inside (``Σ|P|² = (N/2)²``).
    intensity_scale: initial ``s > 0`` (stored as its logarithm).
    normalization_factor: input normalisation ``f > 0`` of the training data; targets are
    ``K = (X·f)²``. precision: "32" | "64" | "16-mixed" | "bf16-mixed" (network layers' dtype
    policy; the physics runs in float32, float64 for "64").
    """
    model = PtychoPINN(
        N=int(config.N), gridsize=int(config.gridsize), amp_activation=config.amp_activation,
        probe_big=bool(config.probe_big), probe_mask=bool(config.probe_mask),
        probe_trainable=bool(config.probe_trainable),
        intensity_scale_trainable=bool(config.intensity_scale_trainable), mode=config.mode,
        interpolation=config.interpolation, group_pad=config.group_pad, probe=probe,
        intensity_scale=intensity_scale, normalization_factor=normalization_factor,
        precision=precision, filter_scale=float(getattr(config, "filter_scale", 1.0)),
        decoder=getattr(config, "decoder", "reference"),
        per_pattern=bool(getattr(config, "per_pattern", False)),
        projection_steps=int(getattr(config, "projection_steps", 0)), name=name)
    model.build_by_calling()
    return model
