"""ptycho.model: contract layer names/shapes, forward physics against the NumPy reference,
independence of models, trainable flags, batch sizes under tf.function/XLA, weights round trip.

Agreement criterion: ``max|tf - ref| <= 1e-5 * max|ref|`` (float32).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from ptycho import physics as P  # noqa: E402
from ptycho.config import ModelConfig  # noqa: E402
from ptycho.model import build_model, network_filters  # noqa: E402
from ptycho.probe import default_probe, normalize_probe, probe_mask  # noqa: E402

RTOL = 1e-5


def rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def inputs(B, N, C, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, size=(B, N, N, C)).astype(np.float32)
    offsets = rng.uniform(-3, 3, size=(B, C, 2)).astype(np.float32)
    return X, offsets


def expected_layers(N, C, probe_big):
    enc, dec = network_filters(N)
    names = []
    cin = C
    for i, f in enumerate(enc):
        names += [(f"enc{i}_conv0", (3, 3, cin, f)), (f"enc{i}_conv1", (3, 3, f, f))]
        cin = f
    for d in ("amp", "phase"):
        prev = enc[-1]
        for j, f in enumerate(dec):
            names += [(f"{d}_dec{j}_conv0", (3, 3, prev, f)), (f"{d}_dec{j}_conv1", (3, 3, f, f))]
            prev = f
        names.append((f"{d}_out", (3, 3, prev, C)))
        if probe_big:
            names.append((f"{d}_big_out", (3, 3, prev, C)))
    return names


@pytest.mark.parametrize("N,gridsize,probe_big", [(64, 1, True), (64, 2, False), (128, 1, True),
                                                  (32, 3, True)])
def test_layers_named_and_shaped_as_contract(N, gridsize, probe_big):
    C = gridsize ** 2
    model = build_model(ModelConfig(N=N, gridsize=gridsize, probe_big=probe_big),
                        default_probe(N), 3.0, 2.0)
    convs = [(layer.name, tuple(layer.kernel.shape)) for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D)]
    assert convs == expected_layers(N, C, probe_big)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.bias.shape == (layer.kernel.shape[-1],)
    assert tuple(model.probe.shape) == (N, N, 2)
    assert tuple(model.log_intensity_scale.shape) == ()
    if (N, gridsize, probe_big) == (64, 1, True):
        assert 2.2e6 < model.count_params() < 2.4e6
    assert network_filters(64) == ([64, 128, 256], [128, 64])


def test_forward_matches_reference_physics():
    """Outputs equal the NumPy reference applied to the network's own amplitude and phase."""
    N = 32
    probe = default_probe(N) * (1.0 + 0.2j)
    for gridsize, probe_big, mask, interp in ((1, True, False, "bilinear"),
                                              (2, False, True, "bilinear"),
                                              (2, True, False, "fourier")):
        C = gridsize ** 2
        cfg = ModelConfig(N=N, gridsize=gridsize, probe_big=probe_big, probe_mask=mask,
                          interpolation=interp)
        model = build_model(cfg, probe, 7.0, 2.0)
        X, off = inputs(3, N, C, seed=gridsize)
        out = {k: v.numpy() for k, v in model((X, off)).items()}
        amp = np.transpose(out["patch_amp"], (0, 3, 1, 2)).astype(np.float64)
        ph = np.transpose(out["patch_phase"], (0, 3, 1, 2)).astype(np.float64)
        assert np.all(np.abs(ph) <= np.pi) and np.all(amp >= 0) and np.all(amp <= 1)
        obj = amp * np.exp(1j * ph)
        central = np.zeros((N, N))
        central[N // 4:3 * N // 4, N // 4:3 * N // 4] = 1
        if not probe_big:
            assert np.all(obj[..., central == 0] == 0)
        if C > 1:
            obj = P.group_reassemble(obj, off.astype(np.float64), interpolation=interp,
                                     footprint=None if probe_big else central)
        P_eff = normalize_probe(probe).astype(np.complex128)
        if mask:
            P_eff = P_eff * probe_mask(N)
        A = np.abs(P.far_field(P.illuminate(obj, P_eff)))
        cl = lambda a: np.transpose(a, (0, 2, 3, 1))  # noqa: E731
        assert rel_err(out["object"], cl(obj)) < RTOL
        assert rel_err(out["amplitude"], cl(A)) < RTOL
        assert rel_err(out["counts"], cl((7.0 * A) ** 2)) < RTOL
        assert out["object"].dtype == np.complex64


def test_two_models_are_independent():
    N = 32
    a = build_model(ModelConfig(N=N, gridsize=1), default_probe(N), 2.0, 1.0)
    b = build_model(ModelConfig(N=N, gridsize=2, intensity_scale_trainable=True,
                                amp_activation="softplus"), default_probe(N), 5.0, 3.0)
    assert a.intensity_scale_value() == pytest.approx(2.0)
    assert b.intensity_scale_value() == pytest.approx(5.0)
    b.log_intensity_scale.assign(np.log(11.0))
    assert a.intensity_scale_value() == pytest.approx(2.0)
    assert b.normalization_factor == 3.0 and a.normalization_factor == 1.0
    c = build_model(ModelConfig(N=N, gridsize=1), default_probe(N), 4.0, 1.0)
    c.set_weights([w if w.shape != () else np.float32(np.log(4.0)) for w in a.get_weights()])
    X, off = inputs(2, N, 1)
    ratio = c((X, off))["counts"].numpy() / a((X, off))["counts"].numpy()
    np.testing.assert_allclose(ratio[np.isfinite(ratio)], 4.0, rtol=1e-4)
    assert a.log_intensity_scale is not c.log_intensity_scale
    assert not a.log_intensity_scale.trainable and b.log_intensity_scale.trainable


def test_trainable_flags():
    N = 32
    fixed = build_model(ModelConfig(N=N), default_probe(N), 1.0, 1.0)
    names = {v.path.split("/")[-1] for v in fixed.trainable_variables}
    assert "probe" not in names and "log_intensity_scale" not in names
    both = build_model(ModelConfig(N=N, probe_trainable=True, intensity_scale_trainable=True),
                       default_probe(N), 1.0, 1.0)
    names = {v.path.split("/")[-1] for v in both.trainable_variables}
    assert {"probe", "log_intensity_scale"} <= names
    X, off = inputs(2, N, 1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(both((X, off))["counts"])
    grads = tape.gradient(loss, [both.probe, both.log_intensity_scale])
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert float(tf.reduce_max(tf.abs(grads[0]))) > 0


@pytest.mark.parametrize("jit", [False, True])
def test_every_batch_size_groups_independent(jit):
    N, g = 32, 2
    model = build_model(ModelConfig(N=N, gridsize=g, probe_big=False), default_probe(N), 1.0, 1.0)
    fn = tf.function(lambda X, o: model((X, o))["object"], jit_compile=jit, reduce_retracing=True)
    X, off = inputs(16, N, 4, seed=3)
    full = fn(X, off).numpy()
    assert full.shape == (16, N, N, 4)
    for B in (1, 7):
        part = fn(X[:B], off[:B]).numpy()
        np.testing.assert_allclose(part, full[:B], atol=1e-5)
    one = fn(X[9:10], off[9:10]).numpy()
    np.testing.assert_allclose(one, full[9:10], atol=1e-5)


def test_bad_inputs_rejected():
    N = 32
    model = build_model(ModelConfig(N=N, gridsize=2), default_probe(N), 1.0, 1.0)
    X, off = inputs(3, N, 4)
    with pytest.raises(ValueError, match="X must have shape"):
        model((X[..., :1], off))
    with pytest.raises(ValueError, match="offsets must have shape"):
        model((X, off[:, :1]))
    with pytest.raises(ValueError, match="groups"):
        model((X, off[:2]))
    with pytest.raises(ValueError, match="probe must have shape"):
        build_model(ModelConfig(N=N), default_probe(64), 1.0, 1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="intensity_scale"):
            build_model(ModelConfig(N=N), default_probe(N), bad, 1.0)
    with pytest.raises(ValueError, match="precision"):
        build_model(ModelConfig(N=N), default_probe(N), 1.0, 1.0, precision="8")


def test_weights_round_trip(tmp_path):
    N = 32
    cfg = ModelConfig(N=N, gridsize=2, probe_trainable=True, intensity_scale_trainable=True)
    a = build_model(cfg, default_probe(N), 3.0, 1.0)
    a.log_intensity_scale.assign(np.log(4.5))
    a.probe.assign(a.probe.numpy() * 1.5 + 0.01)
    path = tmp_path / "m.weights.h5"
    a.save_weights(str(path))
    b = build_model(cfg, default_probe(N), 3.0, 1.0)
    b.load_weights(str(path))
    assert b.intensity_scale_value() == pytest.approx(4.5, rel=1e-6)
    X, off = inputs(2, N, 4)
    for k in ("object", "counts"):
        np.testing.assert_array_equal(a((X, off))[k].numpy(), b((X, off))[k].numpy())


@pytest.mark.parametrize("precision", ["64", "bf16-mixed"])
def test_precisions(precision):
    N = 32
    model = build_model(ModelConfig(N=N, gridsize=2), default_probe(N), 2.0, 1.0,
                        precision=precision)
    out = model(inputs(2, N, 4))
    want = tf.float64 if precision == "64" else tf.float32
    assert out["counts"].dtype == want
    assert np.all(np.isfinite(out["counts"].numpy()))
    ref = build_model(ModelConfig(N=N, gridsize=2), default_probe(N), 2.0, 1.0)
    ref.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    diff = rel_err(out["object"].numpy().astype(np.complex64), ref(inputs(2, N, 4))["object"])
    assert diff < (1e-5 if precision == "64" else 5e-2)


def test_config_dataclass_fields_are_all_used():
    """Every ModelConfig field changes the built model (guards against ignored settings)."""
    N = 32
    base = ModelConfig(N=N, gridsize=2)
    X, off = inputs(2, N, 4, seed=5)
    ref = build_model(base, default_probe(N), 1.0, 1.0)
    w = ref.get_weights()
    ref_out = {k: v.numpy() for k, v in ref((X, off)).items()}
    changes = {"amp_activation": "swish", "probe_mask": True, "interpolation": "fourier",
               "group_pad": 1}
    for field, value in changes.items():
        m = build_model(dataclasses.replace(base, **{field: value}), default_probe(N), 1.0, 1.0)
        m.set_weights(w)
        out = m((X, off))
        key = "counts" if field == "probe_mask" else "object"
        assert not np.allclose(out[key].numpy(), ref_out[key]), field
    # probe_big changes the layers themselves (no *_big_out)
    small = build_model(dataclasses.replace(base, probe_big=False), default_probe(N), 1.0, 1.0)
    assert len(small.get_weights()) == len(w) - 4
