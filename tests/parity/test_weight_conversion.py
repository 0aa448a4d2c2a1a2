"""Weight interchange between the Keras and torch models, and bundle conversion.

The canonical layout (``ptycho.convert``) is what both adapters export; a conversion there and
back reproduces every array exactly (``np.array_equal``, same dtype), in memory and through
bundles in both directions; converted bundles keep the config, scales, probe, provenance and
history and record ``converted_from``; bad weights and bad requests fail with clear messages.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from ptycho import convert, tf_weights  # noqa: E402
from ptycho.bundle import BundleError, load_bundle  # noqa: E402
from ptycho.config import ModelConfig  # noqa: E402
from ptycho.probe import default_probe  # noqa: E402
from ptycho_torch import weights as torch_weights  # noqa: E402


def build_pair(N, gridsize, probe_big, precision="32", filter_scale=1.0, decoder="reference",
               per_pattern=False):
    from ptycho.model import build_model
    from ptycho_torch.model import PtychoPINN

    cfg = ModelConfig(N=N, gridsize=gridsize, probe_big=probe_big, filter_scale=filter_scale,
                      decoder=decoder, per_pattern=per_pattern)
    probe = default_probe(N)
    m_tf = build_model(cfg, probe, 3.0, 2.0, precision=precision)
    torch.manual_seed(N + gridsize)
    m_t = PtychoPINN(cfg, probe, 3.0, 2.0)
    if precision == "64":
        m_t = m_t.double()
    return cfg, m_tf, m_t


def assert_same_weights(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("N,gridsize,probe_big", [(32, 1, True), (32, 3, False), (64, 2, True)])
def test_both_models_export_the_canonical_layout(N, gridsize, probe_big):
    cfg, m_tf, m_t = build_pair(N, gridsize, probe_big)
    shapes = convert.canonical_shapes(cfg)
    w_tf, w_t = tf_weights.export_weights(m_tf), torch_weights.export_weights(m_t)
    assert list(w_tf) == list(w_t) == list(shapes)
    for k, shape in shapes.items():
        assert w_tf[k].shape == w_t[k].shape == shape, k
    assert ("amp_big_out/kernel" in shapes) == probe_big
    assert shapes["enc0_conv0/kernel"] == (3, 3, gridsize ** 2, 256 // 2 ** (len(
        convert.network_filters(N)[0]) - 1))
    # Same probe normalisation and intensity scale at construction.
    assert np.max(np.abs(w_tf["probe"] - w_t["probe"])) <= 1e-6 * np.max(np.abs(w_t["probe"]))
    assert np.isclose(np.exp(w_tf["log_intensity_scale"]), 3.0, rtol=1e-6)
    assert np.isclose(np.exp(w_t["log_intensity_scale"]), 3.0, rtol=1e-6)
    # Parameter count of the contract (N=64, C=1: about 2.3 M).
    if N == 64:
        n = sum(int(np.prod(s)) for k, s in shapes.items() if "/" in k)
        assert 2.0e6 < n < 2.6e6


def test_filter_scale_narrows_both_backends_alike_and_converts():
    cfg, m_tf, m_t = build_pair(64, 2, True, filter_scale=0.25)
    shapes = convert.canonical_shapes(cfg)
    assert shapes["enc0_conv1/kernel"] == (3, 3, 16, 16)
    assert shapes["amp_dec0_conv0/kernel"] == (3, 3, 64, 32)
    w_t = torch_weights.export_weights(m_t)
    assert {k: v.shape for k, v in w_t.items() if "/" in k} == \
        {k: v for k, v in shapes.items() if "/" in k}
    tf_weights.import_weights(m_tf, w_t)
    assert_same_weights(tf_weights.export_weights(m_tf), w_t)


@pytest.mark.parametrize("probe_big", [True, False])
def test_unet_decoder_has_the_same_layout_on_both_backends_and_converts(probe_big):
    cfg, m_tf, m_t = build_pair(64, 2, probe_big, filter_scale=0.25, decoder="unet")
    shapes = convert.canonical_shapes(cfg)
    w_tf, w_t = tf_weights.export_weights(m_tf), torch_weights.export_weights(m_t)
    assert list(w_tf) == list(w_t) == list(shapes)
    assert {k: v.shape for k, v in w_tf.items()} == shapes
    assert "mid_conv1/kernel" in shapes and "amp_dec0_conv0/kernel" not in shapes
    tf_weights.import_weights(m_tf, w_t)
    assert_same_weights(tf_weights.export_weights(m_tf), w_t)
    # a reference-decoder model refuses these weights by name
    _, ref_tf, ref_t = build_pair(64, 2, probe_big, filter_scale=0.25)
    for mod, model in ((tf_weights, ref_tf), (torch_weights, ref_t)):
        with pytest.raises(ValueError, match="decoder='reference'.*missing.*amp_dec0_conv0"):
            mod.import_weights(model, w_t)


@pytest.mark.parametrize("decoder", ["reference", "unet"])
def test_per_pattern_network_has_one_plane_per_head_and_converts(decoder):
    cfg, m_tf, m_t = build_pair(64, 2, True, filter_scale=0.25, decoder=decoder,
                                per_pattern=True)
    shapes = convert.canonical_shapes(cfg)
    head = "amp_out" if decoder == "unet" else "amp_big_out"
    assert shapes["enc0_conv0/kernel"][2] == 1 and shapes[f"{head}/kernel"][3] == 1
    assert shapes == convert.canonical_shapes(ModelConfig(N=64, gridsize=1, filter_scale=0.25,
                                                          decoder=decoder))
    w_t = torch_weights.export_weights(m_t)
    tf_weights.import_weights(m_tf, w_t)
    assert_same_weights(tf_weights.export_weights(m_tf), w_t)
    # a stacked gridsize-2 model refuses them by shape
    _, stacked_tf, stacked_t = build_pair(64, 2, True, filter_scale=0.25, decoder=decoder)
    for mod, model in ((tf_weights, stacked_tf), (torch_weights, stacked_t)):
        with pytest.raises(ValueError, match=r"'enc0_conv0/kernel' must have shape \(3, 3, 4, 16\)"):
            mod.import_weights(model, w_t)


def test_torch_kernel_is_the_permuted_hwio_kernel():
    _, m_tf, m_t = build_pair(32, 2, False)
    w = torch_weights.export_weights(m_t)
    assert np.array_equal(w["enc1_conv0/kernel"],
                          m_t.enc1_conv0.weight.detach().permute(2, 3, 1, 0).numpy())
    tf_weights.import_weights(m_tf, w)
    assert np.array_equal(m_tf.enc1_conv0.kernel.numpy(), w["enc1_conv0/kernel"])
    assert np.array_equal(m_tf.amp_out.bias.numpy(), m_t.amp_out.bias.detach().numpy())


@pytest.mark.parametrize("precision", ["32", "64"])
def test_in_memory_round_trips_are_exact(precision):
    _, m_tf, m_t = build_pair(32, 2, True, precision)
    # TF -> torch -> TF
    w0 = tf_weights.export_weights(m_tf)
    torch_weights.import_weights(m_t, w0)
    w1 = torch_weights.export_weights(m_t)
    assert_same_weights(w0, w1)
    _, m_tf2, m_t2 = build_pair(32, 2, True, precision)
    tf_weights.import_weights(m_tf2, w1)
    assert_same_weights(w0, tf_weights.export_weights(m_tf2))
    # torch -> TF -> torch, starting from the torch initialisation (different from Keras')
    v0 = torch_weights.export_weights(m_t2)
    assert not np.array_equal(v0["enc0_conv0/kernel"], w0["enc0_conv0/kernel"])
    tf_weights.import_weights(m_tf, v0)
    torch_weights.import_weights(m_t, tf_weights.export_weights(m_tf))
    assert_same_weights(v0, torch_weights.export_weights(m_t))
    assert w0["probe"].dtype == (np.float64 if precision == "64" else np.float32)


@pytest.mark.parametrize("adapter", ["tf", "torch"])
def test_import_rejects_bad_weights_by_name(adapter):
    cfg, m_tf, m_t = build_pair(32, 1, False)
    model, mod = (m_tf, tf_weights) if adapter == "tf" else (m_t, torch_weights)
    good = mod.export_weights(model)
    missing = {k: v for k, v in good.items() if k != "phase_out/bias"}
    with pytest.raises(ValueError, match="missing.*phase_out/bias"):
        mod.import_weights(model, missing)
    with pytest.raises(ValueError, match="unexpected.*amp_big_out/kernel"):
        mod.import_weights(model, {**good, "amp_big_out/kernel": good["amp_out/kernel"]})
    bad = dict(good, **{"enc0_conv1/kernel": good["enc0_conv1/kernel"][..., :-1]})
    with pytest.raises(ValueError, match=r"enc0_conv1/kernel.*shape"):
        mod.import_weights(model, bad)
    nan = dict(good, probe=np.full_like(good["probe"], np.nan))
    with pytest.raises(ValueError, match="probe.*NaN"):
        mod.import_weights(model, nan)
    ints = dict(good, **{"amp_out/bias": np.zeros(1, np.int64)})
    with pytest.raises(ValueError, match="amp_out/bias.*floating"):
        mod.import_weights(model, ints)
    # the failed imports changed nothing
    assert_same_weights(good, mod.export_weights(model))


def test_backend_names():
    assert convert.normalize_backend("TensorFlow") == "tf"
    assert convert.normalize_backend("pytorch") == "torch"
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        convert.normalize_backend("jax")


# ---------------------------------------------------------------------------------- bundles
def check_converted(src, dst, target):
    a, b = load_bundle(src), load_bundle(dst)
    assert b.backend == target and a.backend != target
    assert b.config == a.config
    assert b.intensity_scale == a.intensity_scale
    assert b.normalization_factor == a.normalization_factor
    assert b.stats == a.stats
    assert np.array_equal(b.probe, a.probe)
    for key in ("probe_sha256", "provenance", "overrides", "history_summary", "N", "gridsize"):
        assert b.manifest[key] == a.manifest[key], key
    note = b.manifest["converted_from"]
    assert note["backend"] == a.backend and note["weights_sha256"] == a.manifest["weights_sha256"]
    assert note["bundle_dir"] == str(src.resolve())
    assert_same_weights(convert.read_bundle_weights(a), convert.read_bundle_weights(b))


@pytest.mark.parametrize("backend,gridsize", [("tf", 1), ("torch", 2)])
def test_bundle_there_and_back_is_exact(train_run, tmp_path, backend, gridsize):
    src = train_run(backend, gridsize) / "model"
    other = "torch" if backend == "tf" else "tf"
    mid, back = tmp_path / "mid", tmp_path / "back"
    # one way through the CLI, back through the function
    assert convert.main(["--to", "pytorch" if other == "torch" else "tensorflow",
                         str(src.parent), str(mid)]) == 0
    check_converted(src, mid, other)
    assert convert.convert_bundle(mid, back, to=backend) == back
    check_converted(mid, back, backend)
    assert_same_weights(convert.read_bundle_weights(load_bundle(src)),
                        convert.read_bundle_weights(load_bundle(back)))
    assert json.loads((back / "manifest.json").read_text())["converted_from"]["backend"] == other


def test_conversion_refusals(train_run, tmp_path, capsys):
    src = train_run("tf", 1) / "model"
    with pytest.raises(BundleError, match="already is a 'tf' bundle"):
        convert.convert_bundle(src, tmp_path / "x", to="tensorflow")
    with pytest.raises(BundleError, match="is the source bundle"):
        convert.convert_bundle(src, src, to="torch")
    assert convert.main(["--to", "torch", str(tmp_path / "nowhere"), str(tmp_path / "y")]) == 2
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        convert.main(["--to", "jax", str(src), str(tmp_path / "z")])
    assert exc.value.code == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
