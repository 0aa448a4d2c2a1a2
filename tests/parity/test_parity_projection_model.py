"""The whole model with ``projection_steps`` on both backends: same weights and inputs give the
same object, diffraction and counts, and (float64) the same loss gradients for every weight,
gridsize 1 and 2, both interpolations."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from ptycho import tf_weights  # noqa: E402
from ptycho.config import ModelConfig  # noqa: E402
from ptycho.initial_weights import initial_weights  # noqa: E402
from ptycho.probe import default_probe  # noqa: E402
from ptycho_torch import weights as torch_weights  # noqa: E402
from tests.parity.parity_tools import assert_close, rel_err  # noqa: E402
from tests.parity.test_parity_network import (ABS_TOL, FACTOR, N, SCALE, inputs,  # noqa: E402
                                              loss_and_grads_tf, loss_and_grads_torch, run_tf,
                                              run_torch)

STEPS = 3


def _pair(gridsize, interp, precision="32"):
    from ptycho.model import build_model
    from ptycho_torch.model import PtychoPINN

    cfg = ModelConfig(N=N, gridsize=gridsize, interpolation=interp, filter_scale=0.25,
                      projection_steps=STEPS)
    rng = np.random.default_rng(7 + gridsize)
    probe = default_probe(N) * np.exp(0.3j * rng.normal(size=(N, N)))
    m_tf = build_model(cfg, probe, SCALE, FACTOR, precision=precision)
    w = initial_weights(cfg, seed=gridsize, base=tf_weights.export_weights(m_tf))
    tf_weights.import_weights(m_tf, w)
    m_t = PtychoPINN(cfg, probe, SCALE, FACTOR)
    if precision == "64":
        m_t = m_t.double()
    torch_weights.import_weights(m_t, w)
    return m_tf, m_t


@pytest.mark.parametrize("gridsize,interp", [(1, "bilinear"), (2, "fourier"), (2, "bilinear")])
def test_same_outputs_with_projections(gridsize, interp):
    m_tf, m_t = _pair(gridsize, interp)
    X, off = inputs(gridsize, B=3, seed=5)
    a, b = run_tf(m_tf, X, off, False), run_torch(m_t, X, off, False)
    for key in ("object", "amplitude"):
        diff = float(np.max(np.abs(a[key] - b[key])))
        assert diff <= ABS_TOL, f"{key}: max abs diff {diff:.3g} > {ABS_TOL}"
    assert_close(a["counts"], b["counts"], 1e-5, "predicted counts")


def test_projections_move_the_prediction_towards_the_measured_amplitude():
    """With K projections the predicted diffraction amplitude is closer to the measured one
    (X·f/s) than the network's own object gives."""
    from ptycho_torch.model import PtychoPINN

    _, m_t = _pair(2, "fourier")
    plain = PtychoPINN(ModelConfig(N=N, gridsize=2, interpolation="fourier", filter_scale=0.25),
                       m_t.effective_probe().numpy(), SCALE, FACTOR)
    plain.load_state_dict(m_t.state_dict())
    X, off = inputs(2, B=2, seed=9)
    target = X * FACTOR / SCALE
    misfit = {}
    for name, model in (("projected", m_t), ("plain", plain)):
        out = run_torch(model, X, off, False)
        misfit[name] = float(np.sum((out["amplitude"] - target) ** 2))
    assert misfit["projected"] < 0.5 * misfit["plain"]


@pytest.mark.parametrize("gridsize", [1, 2])
def test_same_loss_gradients_with_projections(gridsize):
    m_tf, m_t = _pair(gridsize, "bilinear", precision="64")
    X, off = inputs(gridsize, B=2, seed=13)
    K = (X.astype(np.float64) * FACTOR) ** 2
    loss_tf, g_tf = loss_and_grads_tf(m_tf, X, off, K)
    loss_t, g_t = loss_and_grads_torch(m_t, X, off, K)
    assert rel_err(loss_tf, loss_t) <= 1e-12
    assert set(g_tf) == set(g_t) and len(g_tf) > 10
    for name in g_tf:
        assert np.max(np.abs(g_tf[name])) > 0, f"{name}: zero gradient"
        assert_close(g_t[name], g_tf[name], 1e-9, f"float64 gradient of {name}, torch vs TF")
