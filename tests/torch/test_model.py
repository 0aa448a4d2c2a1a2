"""ptycho_torch.model: layer names and order, shapes, physics, trainable extras."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ptycho import physics as ref  # noqa: E402
from ptycho.config import ModelConfig  # noqa: E402
from ptycho.probe import default_probe, normalize_probe, probe_mask  # noqa: E402
from ptycho_torch import helper  # noqa: E402
from ptycho_torch.model import PtychoPINN, count_parameters, network_filters  # noqa: E402


def _model(N=32, seed=0, **kw):
    torch.manual_seed(seed)
    return PtychoPINN(ModelConfig(N=N, **kw), default_probe(N), intensity_scale=3.0,
                      normalization_factor=2.0)


def _inputs(B, C, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(B, C, N, N, generator=g)
    offsets = (torch.rand(B, C, 2, generator=g) - 0.5) * 8
    return X, offsets


def test_filters_follow_contract():
    assert network_filters(64) == ([64, 128, 256], [128, 64])
    assert network_filters(32) == ([128, 256], [128])
    assert network_filters(128) == ([32, 64, 128, 256], [128, 64, 32])


def test_layer_names_order_and_parameter_count_n64():
    m = _model(N=64)
    convs = [name for name, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    expected = [f"enc{i}_conv{k}" for i in range(3) for k in range(2)]
    for d in ("amp", "phase"):
        expected += [f"{d}_dec{j}_conv{k}" for j in range(2) for k in range(2)]
        expected += [f"{d}_out", f"{d}_big_out"]
    assert convs == expected
    assert m.enc0_conv0.weight.shape == (64, 1, 3, 3)
    assert m.amp_dec0_conv0.weight.shape == (128, 256, 3, 3)
    assert m.amp_out.weight.shape == (1, 64, 3, 3)
    n = count_parameters(m)
    assert 2.2e6 < n < 2.4e6, n
    keys = set(m.state_dict())
    assert {"log_intensity_scale", "probe", "enc0_conv0.weight", "phase_big_out.bias"} <= keys


def test_without_probe_big_there_is_no_big_branch():
    m = _model(probe_big=False)
    assert not hasattr(m, "amp_big_out") and not hasattr(m, "phase_big_out")


@pytest.mark.parametrize("gridsize", [1, 2])
@pytest.mark.parametrize("B", [1, 3])
def test_forward_shapes_and_dtypes(gridsize, B):
    C = gridsize ** 2
    m = _model(gridsize=gridsize)
    out = m(*_inputs(B, C, 32))
    assert out.obj.shape == (B, C, 32, 32) and out.obj.dtype == torch.complex64
    for t in (out.amplitude, out.counts, out.patch_amp, out.patch_phase):
        assert t.shape == (B, C, 32, 32) and t.dtype == torch.float32
    assert torch.all(out.patch_phase.abs() <= np.pi)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_forward_matches_reference_physics(gridsize):
    C = gridsize ** 2
    m = _model(gridsize=gridsize, probe_big=False, probe_mask=True).eval()
    X, offsets = _inputs(2, C, 32, seed=3)
    with torch.no_grad():
        out = m(X, offsets)
    obj = torch.polar(out.patch_amp, out.patch_phase).numpy()
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1
    assert np.all(obj[..., mask == 0] == 0)  # only the central N/2 x N/2 is predicted
    if gridsize > 1:
        obj = ref.group_reassemble(obj, offsets.numpy(), footprint=mask)
    np.testing.assert_allclose(out.obj.numpy(), obj, atol=1e-5 * np.abs(obj).max())
    probe = normalize_probe(default_probe(32)) * probe_mask(32)
    amp = ref.diffraction_amplitude(obj, probe)
    np.testing.assert_allclose(out.amplitude.numpy(), amp, atol=1e-5 * amp.max())
    np.testing.assert_allclose(out.counts.numpy(), (3.0 * amp) ** 2, rtol=1e-4,
                               atol=1e-5 * (3.0 * amp.max()) ** 2)


def test_probe_big_fills_the_border():
    m = _model(probe_big=True)
    out = m(*_inputs(1, 1, 32))
    assert torch.all(out.patch_amp[0, 0, :8, :] > 0)


@pytest.mark.parametrize("act", ["sigmoid", "softplus", "swish"])
def test_amplitude_activations(act):
    out = _model(amp_activation=act)(*_inputs(1, 1, 32))
    assert torch.isfinite(out.counts).all()


def test_frozen_extras_are_buffers():
    m = _model()
    names = dict(m.named_parameters())
    assert "log_intensity_scale" not in names and "probe" not in names
    assert "log_intensity_scale" in dict(m.named_buffers())
    assert m.intensity_scale_value() == pytest.approx(3.0, rel=1e-6)


def test_trainable_extras_are_parameters_and_get_updated():
    m = _model(intensity_scale_trainable=True, probe_trainable=True)
    names = dict(m.named_parameters())
    assert names["log_intensity_scale"].requires_grad and names["probe"].requires_grad
    assert names["probe"].shape == (32, 32, 2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    before_s, before_p = m.log_intensity_scale.item(), m.probe.detach().clone()
    X, offsets = _inputs(2, 1, 32)
    out = m(X, offsets)
    loss = (out.counts - m.target_counts(X)).abs().mean()
    loss.backward()
    assert m.log_intensity_scale.grad is not None and m.probe.grad.abs().sum() > 0
    opt.step()
    assert m.log_intensity_scale.item() != before_s
    assert not torch.equal(m.probe.detach(), before_p)


def test_target_counts_use_the_normalization_factor():
    m = _model()
    X = torch.full((1, 1, 32, 32), 1.5)
    assert torch.allclose(m.target_counts(X), torch.full_like(X, 9.0))


def test_bad_inputs_are_refused():
    m = _model(gridsize=2)
    X, offsets = _inputs(2, 4, 32)
    with pytest.raises(ValueError, match="offsets"):
        m(X, offsets[:1])
    with pytest.raises(ValueError, match="X must have shape"):
        m(X[:, :1], offsets)
    with pytest.raises(ValueError, match="intensity_scale"):
        PtychoPINN(ModelConfig(N=32), default_probe(32), intensity_scale=0.0,
                   normalization_factor=1.0)
    with pytest.raises(ValueError, match="probe"):
        PtychoPINN(ModelConfig(N=32), default_probe(64), intensity_scale=1.0,
                   normalization_factor=1.0)


def test_batch_independence_of_the_forward_pass():
    m = _model(gridsize=2).eval()
    X, offsets = _inputs(5, 4, 32, seed=7)
    with torch.no_grad():
        full = m(X, offsets).counts
        parts = torch.cat([m(X[:3], offsets[:3]).counts, m(X[3:], offsets[3:]).counts])
    torch.testing.assert_close(full, parts, rtol=1e-5, atol=1e-5 * full.abs().max().item())


def test_ground_truth_object_reproduces_simulated_counts():
    """Simulator and model agree: the true object patches, put through the model's physics with
    the simulator's dose as intensity scale, give back the noise-free simulated counts."""
    from ptycho.data.prepare import prepare_grouped_arrays
    from ptycho.payload import DataStatistics
    from tests.torch.torch_testdata import make_scan

    data = make_scan(nphotons=1e8, seed=3, noise=False)
    stats = DataStatistics.from_amplitudes(data.diffraction, nphotons=1e8)
    ga = prepare_grouped_arrays(data, 1, stats.normalization_factor, with_ground_truth=True,
                                interpolation="bilinear")
    m = PtychoPINN(ModelConfig(N=32, gridsize=1), data.probe, stats.intensity_scale,
                   stats.normalization_factor)
    X = torch.from_numpy(np.array(ga.X)).double()
    F = helper.far_field(helper.illuminate(torch.from_numpy(np.array(ga.gt_patches)),
                                           m.effective_probe()))
    lam = (stats.intensity_scale ** 2 * (F.real ** 2 + F.imag ** 2)).double()
    K = m.target_counts(X)
    rel = float((lam - K).abs().sum() / K.sum())
    assert rel < 1e-5, rel
    # the intensity scale measured from the counts is lower by the object's mean transmission
    measured = DataStatistics.from_amplitudes(data.diffraction)
    assert measured.intensity_scale < stats.intensity_scale
