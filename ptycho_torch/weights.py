"""Export and import the weights of a torch ``ptycho_torch.model.PtychoPINN`` as canonical arrays.

The canonical layout (``ptycho.convert``) follows Keras: ``"{layer}/kernel"`` HWIO
``(3, 3, in, out)``, ``"{layer}/bias"`` ``(out,)``, ``"log_intensity_scale"`` ``()`` and
``"probe"`` ``(N, N, 2)``. The module's state-dict keys map to it one-to-one:

* ``"{layer}.weight"`` ``(out, in, 3, 3)`` <-> ``"{layer}/kernel"`` by ``permute(2, 3, 1, 0)``
  (and back by ``permute(3, 2, 0, 1)``);
* ``"{layer}.bias"`` <-> ``"{layer}/bias"``;
* ``"log_intensity_scale"`` and ``"probe"`` (parameters or buffers) keep their names.

Values are copied without rounding; an import casts to the dtype of the module's tensors (a
no-op when source and target have the same precision) and loads with ``strict=True``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["export_weights", "import_weights", "state_key_to_canonical",
           "canonical_to_state_key"]

_EXTRAS = ("log_intensity_scale", "probe")


def state_key_to_canonical(key: str) -> str:
    """``"enc0_conv0.weight"`` -> ``"enc0_conv0/kernel"``; ``ValueError`` for other keys."""
    if key in _EXTRAS:
        return key
    layer, _, param = key.rpartition(".")
    if not layer or "." in layer or param not in ("weight", "bias"):
        raise ValueError(f"state-dict key {key!r} is not part of the canonical layout "
                         "(expected '<layer>.weight', '<layer>.bias', 'log_intensity_scale' or "
                         "'probe')")
    return f"{layer}/{'kernel' if param == 'weight' else 'bias'}"


def canonical_to_state_key(name: str) -> str:
    """``"enc0_conv0/kernel"`` -> ``"enc0_conv0.weight"``; ``ValueError`` for other names."""
    if name in _EXTRAS:
        return name
    layer, _, param = name.rpartition("/")
    if not layer or "/" in layer or param not in ("kernel", "bias"):
        raise ValueError(f"canonical weight name {name!r} is not '<layer>/kernel', "
                         "'<layer>/bias', 'log_intensity_scale' or 'probe'")
    return f"{layer}.{'weight' if param == 'kernel' else 'bias'}"


def _model_config(module):
    from ptycho.config import ModelConfig

    return ModelConfig(N=int(module.N), gridsize=int(module.gridsize),
                       probe_big=bool(module.probe_big), filter_scale=float(module.filter_scale),
                       decoder=module.decoder, per_pattern=module.per_pattern)


def export_weights(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """``{canonical name: array}`` of every persistent tensor of a ``PtychoPINN``.

    Conv weights are returned HWIO; arrays are contiguous copies in the tensors' dtype, in the
    contract's order. ``ValueError`` if the state dict does not match the contract network.
    """
    from ptycho.convert import check_canonical

    raw: dict[str, np.ndarray] = {}
    for key, t in module.state_dict().items():
        name = state_key_to_canonical(key)
        t = t.detach().to("cpu")
        if name.endswith("/kernel"):
            if t.dim() != 4:
                raise ValueError(f"state-dict key {key!r}: expected a (out, in, kh, kw) conv "
                                 f"weight, got shape {tuple(t.shape)}")
            t = t.permute(2, 3, 1, 0)
        raw[name] = np.array(t.numpy(), copy=True, order="C")
    return check_canonical(raw, _model_config(module),
                           where=f"torch module {type(module).__name__}")


def import_weights(module: torch.nn.Module, weights: Mapping[str, Any]) -> None:
    """Load canonical ``weights`` into a ``PtychoPINN`` in place (``load_state_dict``, strict).

    ``weights`` must hold exactly the module's weights with the canonical shapes
    (``ptycho.convert.check_canonical``; ``ValueError`` naming the key otherwise). Each array is
    cast to the dtype of the module tensor it replaces.
    """
    from ptycho.convert import check_canonical

    arrays = check_canonical(weights, _model_config(module), where="canonical weights")
    current = module.state_dict()
    state: dict[str, torch.Tensor] = {}
    for name, arr in arrays.items():
        key = canonical_to_state_key(name)
        if key not in current:
            raise ValueError(f"torch module {type(module).__name__} has no tensor {key!r} for "
                             f"canonical weight {name!r}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if name.endswith("/kernel"):
            t = t.permute(3, 2, 0, 1).contiguous()
        state[key] = t.to(current[key].dtype)
    unknown = sorted(set(current) - set(state))
    if unknown:
        raise ValueError(f"torch module {type(module).__name__} has tensors outside the "
                         f"canonical layout: {unknown}")
    module.load_state_dict(state, strict=True)
