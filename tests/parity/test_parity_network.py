"""The whole network on both backends with the same (converted) weights, N=64.

The same canonical weights (seeded Glorot kernels, seeded non-zero biases) are imported into a
Keras and a torch ``PtychoPINN``; the same X and offsets then give the same network outputs, object
patches and predicted diffraction (max abs diff <= 1e-4), counts and Poisson loss (1e-5 relative),
in inference and in training mode, for gridsize 1 and 2 with ``probe_big`` on and off, for the
reference and the U-Net decoder (the latter at a quarter of the filters), with the C patterns of
a group as the planes of one network and with the network applied to each pattern alone
(``per_pattern``). The loss gradients with
respect to every weight agree too (float64: 1e-9 relative per tensor; float32: each backend within
5e-3 of the float64 values), so a training step moves both models alike.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from tests.parity.parity_tools import assert_close, rel_err  # noqa: E402
from ptycho import tf_weights  # noqa: E402
from ptycho.config import ModelConfig  # noqa: E402
from ptycho.initial_weights import initial_weights  # noqa: E402
from ptycho.probe import default_probe  # noqa: E402
from ptycho_torch import weights as torch_weights  # noqa: E402

N = 64
ABS_TOL = 1e-4
SCALE, FACTOR = 31.0, 29.0           # intensity scale and input normalisation factor
CASES = [(1, True, "bilinear", "reference"), (1, False, "bilinear", "reference"),
         (2, True, "bilinear", "reference"), (2, False, "bilinear", "reference"),
         (2, False, "fourier", "reference"), (1, True, "bilinear", "unet"),
         (2, False, "fourier", "unet"), (2, True, "bilinear", "unet")]
CASES = [case + (False,) for case in CASES] + [(2, True, "fourier", "unet", True),
                                               (2, False, "bilinear", "reference", True)]


def model_config(gridsize, probe_big, interp="bilinear", decoder="reference", per_pattern=False):
    return ModelConfig(N=N, gridsize=gridsize, probe_big=probe_big, interpolation=interp,
                       decoder=decoder, filter_scale=1.0 if decoder == "reference" else 0.25,
                       per_pattern=per_pattern)


@pytest.fixture(scope="module")
def model_pair():
    """``pair(gridsize, probe_big, interpolation, decoder, per_pattern) -> (keras model, torch
    model)`` with
    the same weights; each pair is built once per module."""
    from ptycho.model import build_model
    from ptycho_torch.model import PtychoPINN

    cache = {}

    def make(gridsize, probe_big, interp, decoder="reference", per_pattern=False):
        key = (gridsize, probe_big, interp, decoder, per_pattern)
        if key not in cache:
            cfg = model_config(gridsize, probe_big, interp, decoder, per_pattern)
            rng = np.random.default_rng(100 + 10 * gridsize + int(probe_big))
            probe = default_probe(N) * np.exp(0.3j * rng.normal(size=(N, N)))
            m_tf = build_model(cfg, probe, SCALE, FACTOR)
            # seeded kernels: Keras' own initialiser draws differently in every process
            w = initial_weights(cfg, seed=gridsize + 2 * int(probe_big),
                                base=tf_weights.export_weights(m_tf))
            for k in w:
                if k.endswith("/bias"):
                    w[k] = (0.05 * rng.normal(size=w[k].shape)).astype(np.float32)
            tf_weights.import_weights(m_tf, w)
            m_t = PtychoPINN(cfg, probe, SCALE, FACTOR)
            torch_weights.import_weights(m_t, w)
            cache[key] = (m_tf, m_t)
        return cache[key]

    return make


def inputs(gridsize, B, seed):
    C = gridsize ** 2
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 2.0, size=(B, C, N, N)).astype(np.float32)
    off = np.zeros((B, C, 2), np.float32)
    if C > 1:
        off = rng.uniform(-4.0, 4.0, size=(B, C, 2)).astype(np.float32)
        off -= off.mean(axis=1, keepdims=True)         # relative to the group centre
    return X, off


def run_tf(m_tf, X, off, training):
    out = m_tf((np.transpose(X, (0, 2, 3, 1)), off), training=training)
    return {k: np.transpose(v.numpy(), (0, 3, 1, 2)) for k, v in out.items()}


def run_torch(m_t, X, off, training):
    m_t.train(training)
    with torch.no_grad():
        out = m_t(torch.from_numpy(X), torch.from_numpy(off))
    m_t.eval()
    return {"object": out.obj.numpy(), "amplitude": out.amplitude.numpy(),
            "counts": out.counts.numpy(), "patch_amp": out.patch_amp.numpy(),
            "patch_phase": out.patch_phase.numpy()}


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("gridsize,probe_big,interp,decoder,per_pattern", CASES)
def test_same_outputs(model_pair, gridsize, probe_big, interp, decoder, per_pattern, training):
    m_tf, m_t = model_pair(gridsize, probe_big, interp, decoder, per_pattern)
    X, off = inputs(gridsize, B=3, seed=7)
    a, b = run_tf(m_tf, X, off, training), run_torch(m_t, X, off, training)
    for key in ("patch_amp", "patch_phase", "object", "amplitude"):
        diff = float(np.max(np.abs(a[key] - b[key])))
        assert diff <= ABS_TOL, f"{key}: max abs diff {diff:.3g} > {ABS_TOL}"
    assert_close(a["counts"], b["counts"], 1e-5, "predicted counts")
    # the outputs are not trivially zero / constant
    assert np.std(np.abs(b["object"])) > 1e-3 and np.max(b["amplitude"]) > 0.1
    if not probe_big:
        q = N // 4
        assert np.all(a["patch_amp"][..., :q, :] == 0) and np.all(b["patch_amp"][..., :q, :] == 0)


def test_batch_of_one_and_odd_batch(model_pair):
    m_tf, m_t = model_pair(2, False, "bilinear")
    for B in (1, 5):
        X, off = inputs(2, B=B, seed=B)
        a, b = run_tf(m_tf, X, off, False), run_torch(m_t, X, off, False)
        assert float(np.max(np.abs(a["object"] - b["object"]))) <= ABS_TOL
        assert float(np.max(np.abs(a["amplitude"] - b["amplitude"]))) <= ABS_TOL


def test_per_pattern_network_is_the_gridsize_one_network_on_each_member(model_pair):
    """With ``per_pattern`` each member's patch is what the gridsize-1 network with the same
    weights makes of that member's pattern alone, on both backends; the weights are the same
    canonical set."""
    from ptycho.model import build_model
    from ptycho_torch.model import PtychoPINN

    m_tf, m_t = model_pair(2, True, "fourier", "unet", True)
    w = tf_weights.export_weights(m_tf)
    cfg1 = model_config(1, True, "fourier", "unet")
    one_tf = build_model(cfg1, m_tf.probe_value(), SCALE, FACTOR)
    tf_weights.import_weights(one_tf, w)
    one_t = PtychoPINN(cfg1, m_tf.probe_value(), SCALE, FACTOR)
    torch_weights.import_weights(one_t, w)
    X, off = inputs(2, B=3, seed=5)
    grouped = run_tf(m_tf, X, off, False), run_torch(m_t, X, off, False)
    singles = X.reshape(-1, 1, N, N)
    alone = [run_tf(one_tf, singles, np.zeros((len(singles), 1, 2), np.float32), False),
             run_torch(one_t, singles, np.zeros((len(singles), 1, 2), np.float32), False)]
    for g, a in zip(grouped, alone):
        for key in ("patch_amp", "patch_phase"):
            diff = float(np.max(np.abs(g[key] - a[key].reshape(3, 4, N, N))))
            assert diff <= ABS_TOL, f"{key}: max abs diff {diff:.3g} > {ABS_TOL}"
    # and the members differ, so the comparison is not between constants
    assert float(np.std(grouped[1]["patch_amp"][:, 0] - grouped[1]["patch_amp"][:, 1])) > 1e-4


def loss_and_grads_tf(m_tf, X, off, K):
    """Mean Poisson NLL and its gradients ``{canonical name: array}`` (TF GradientTape)."""
    from ptycho import tf_helper as T

    dtype = m_tf.physics_dtype
    variables = m_tf.trainable_variables
    with tf.GradientTape() as tape:
        out = m_tf((np.transpose(X, (0, 2, 3, 1)).astype(dtype), off.astype(dtype)),
                   training=True)
        loss = tf.reduce_mean(T.poisson_nll(out["counts"],
                                            np.transpose(K, (0, 2, 3, 1)).astype(dtype)))
    grads = tape.gradient(loss, variables)
    return float(loss), {tf_weights.canonical_name(m_tf, v): g.numpy()
                         for v, g in zip(variables, grads)}


def loss_and_grads_torch(m_t, X, off, K):
    """The same with torch autograd, gradients converted to the canonical (HWIO) layout."""
    from ptycho_torch import helper as H

    dtype = m_t.log_intensity_scale.dtype
    m_t.train()
    m_t.zero_grad()
    out = m_t(torch.from_numpy(X).to(dtype), torch.from_numpy(off).to(dtype))
    loss = H.poisson_nll(out.counts, torch.from_numpy(K).to(dtype)).mean()
    loss.backward()
    m_t.eval()
    grads = {}
    for name, p in m_t.named_parameters():
        g = p.grad.detach()
        grads[torch_weights.state_key_to_canonical(name)] = (
            g.permute(2, 3, 1, 0).numpy() if g.dim() == 4 else g.numpy())
    return float(loss.detach()), grads


@pytest.mark.parametrize("gridsize,probe_big,decoder,per_pattern", [
    (1, True, "reference", False), (2, False, "reference", False), (2, True, "unet", False),
    (2, True, "unet", True)])
def test_same_loss_and_weight_gradients(model_pair, gridsize, probe_big, decoder, per_pattern):
    """Mean Poisson NLL against counts (X·f)² and its gradient with respect to every trainable
    weight. In float64 both backends compute the same numbers (1e-9 relative per tensor); in
    float32 each backend's gradients are within 5e-3 of the float64 values (round-off of the
    convolution backward passes, which sum over every pixel of the batch; see docs/parity.md)."""
    from ptycho.model import build_model
    from ptycho_torch.model import PtychoPINN

    m_tf, m_t = model_pair(gridsize, probe_big, "bilinear", decoder, per_pattern)
    w = tf_weights.export_weights(m_tf)
    probe = m_tf.probe_value()
    cfg = model_config(gridsize, probe_big, decoder=decoder, per_pattern=per_pattern)
    m_tf64 = build_model(cfg, probe, SCALE, FACTOR, precision="64")
    tf_weights.import_weights(m_tf64, w)
    m_t64 = PtychoPINN(cfg, probe, SCALE, FACTOR).double()
    torch_weights.import_weights(m_t64, w)

    X, off = inputs(gridsize, B=2, seed=11)
    K = (X.astype(np.float64) * FACTOR) ** 2
    loss_tf, g_tf = loss_and_grads_tf(m_tf, X, off, K)
    loss_t, g_t = loss_and_grads_torch(m_t, X, off, K)
    loss_tf64, g_tf64 = loss_and_grads_tf(m_tf64, X, off, K)
    loss_t64, g_t64 = loss_and_grads_torch(m_t64, X, off, K)
    assert rel_err(loss_tf64, loss_t64) <= 1e-12
    assert rel_err(loss_tf, loss_tf64) <= 1e-5 and rel_err(loss_t, loss_tf64) <= 1e-5
    names = set(g_tf64)
    assert names == set(g_t64) == set(g_tf) == set(g_t) and len(names) > 10
    for name in names:
        assert np.max(np.abs(g_tf64[name])) > 0, f"{name}: zero gradient"
        assert_close(g_t64[name], g_tf64[name], 1e-9, f"float64 gradient of {name}, torch vs TF")
        assert_close(g_tf[name], g_tf64[name], 5e-3, f"float32 TF gradient of {name}")
        assert_close(g_t[name], g_tf64[name], 5e-3, f"float32 torch gradient of {name}")
