"""Export and import the weights of a Keras ``ptycho.model.PtychoPINN`` as canonical arrays.

The canonical layout (``ptycho.convert``) is the Keras one: ``"{layer}/kernel"`` HWIO
``(3, 3, in, out)``, ``"{layer}/bias"`` ``(out,)``, ``"log_intensity_scale"`` ``()`` and
``"probe"`` ``(N, N, 2)`` (real, imaginary). A Keras variable's path inside the model,
``"<model name>/enc0_conv0/kernel"``, is its canonical name after the model-name prefix, so the
mapping needs no table: every weight of the model is exported, and an import must supply
exactly the model's weights. Values are copied without rounding (an import casts to the
variable's dtype, which is a no-op when source and target were built with the same precision).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["export_weights", "import_weights", "canonical_name"]


def canonical_name(model, variable) -> str:
    """Canonical name of one of ``model``'s variables (its path without the model prefix)."""
    path = str(variable.path)
    prefix = f"{model.name}/"
    return path[len(prefix):] if path.startswith(prefix) else path


def _model_config(model):
    from ptycho.config import ModelConfig

    return ModelConfig(N=int(model.N), gridsize=int(model.gridsize),
                       probe_big=bool(model.probe_big), filter_scale=float(model.filter_scale),
                       decoder=model.decoder, per_pattern=model.per_pattern)


def export_weights(model) -> dict[str, np.ndarray]:
    """``{canonical name: array}`` of every weight of a built Keras ``PtychoPINN``.

    Arrays are copies in the variables' dtype, in the contract's order. ``ValueError`` if the
    model's weights do not match the contract network for its N, gridsize and probe_big.
    """
    from ptycho.convert import check_canonical

    import keras

    if not model.built or not model.weights:
        raise ValueError("the Keras model has no weights yet; build it first "
                         "(ptycho.model.build_model builds it)")
    raw: dict[str, np.ndarray] = {}
    for v in model.weights:
        name = canonical_name(model, v)
        if name in raw:
            raise ValueError(f"the Keras model holds two weights named {name!r}")
        raw[name] = np.array(keras.ops.convert_to_numpy(v), copy=True)
    return check_canonical(raw, _model_config(model), where=f"Keras model {model.name!r}")


def import_weights(model, weights: Mapping[str, Any]) -> None:
    """Assign canonical ``weights`` to every weight of a built Keras ``PtychoPINN`` in place.

    ``weights`` must hold exactly the model's weights with the canonical shapes
    (``ptycho.convert.check_canonical``; ``ValueError`` naming the key otherwise). Each array is
    cast to its variable's dtype. The model's intensity scale and probe are taken from
    ``weights`` too.
    """
    from ptycho.convert import check_canonical

    if not model.built or not model.weights:
        raise ValueError("the Keras model has no weights yet; build it first "
                         "(ptycho.model.build_model builds it)")
    arrays = check_canonical(weights, _model_config(model), where="canonical weights")
    variables = {canonical_name(model, v): v for v in model.weights}
    unknown = sorted(set(variables) - set(arrays))
    if unknown:
        raise ValueError(f"Keras model {model.name!r} has weights outside the canonical layout: "
                         f"{unknown}")
    for name, v in variables.items():
        v.assign(np.asarray(arrays[name], dtype=np.dtype(str(v.dtype))))
