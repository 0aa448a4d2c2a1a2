"""The layer list both backends build from (``ptycho.architecture.conv_layers``), NumPy only."""

from __future__ import annotations

import math

import pytest

from ptycho.architecture import DECODERS, check_decoder, conv_layers, network_filters
from ptycho.config import ConfigError, ModelConfig
from ptycho.convert import canonical_shapes, conv_layer_names


def _chain_ok(layers, C):
    """Every layer's input count is what the graph feeds it (reference: the previous layer)."""
    return layers[0][1] == C and all(b[1] == a[2] for a, b in zip(layers, layers[1:]))


@pytest.mark.parametrize("N", [32, 64, 128])
@pytest.mark.parametrize("probe_big", [True, False])
def test_reference_layers_are_the_contract_network(N, probe_big):
    enc, dec = network_filters(N)
    layers = conv_layers(N, 4, probe_big)
    names = [n for n, _, _ in layers]
    assert names[:2 * len(enc)] == [f"enc{i}_conv{k}" for i in range(len(enc)) for k in (0, 1)]
    for d in ("amp", "phase"):
        branch = [(n, i, o) for n, i, o in layers if n.startswith(f"{d}_dec")]
        assert [o for _, _, o in branch[1::2]] == dec
        assert branch[0][1] == enc[-1]
        head = dict((n, (i, o)) for n, i, o in layers)[f"{d}_out"]
        assert head == (dec[-1], 4)
        assert (f"{d}_big_out" in names) == probe_big
    assert _chain_ok(layers[:2 * len(enc)], 4)


@pytest.mark.parametrize("N,C,scale", [(32, 1, 1.0), (64, 4, 0.25), (128, 9, 0.5)])
def test_unet_layers_double_at_the_bottleneck_and_take_the_skips(N, C, scale):
    enc, _ = network_filters(N, scale)
    layers = conv_layers(N, C, probe_big=True, filter_scale=scale, decoder="unet")
    by_name = {n: (i, o) for n, i, o in layers}
    assert by_name["mid_conv0"] == (enc[-1], 2 * enc[-1])
    assert by_name["mid_conv1"] == (2 * enc[-1], 2 * enc[-1])
    prev = 2 * enc[-1]
    for j, skip in enumerate(enc[::-1]):
        # upsampled features and the encoder features of the same size, concatenated
        assert by_name[f"dec{j}_conv0"] == (prev + skip, skip)
        assert by_name[f"dec{j}_conv1"] == (skip, skip)
        prev = skip
    assert by_name["amp_out"] == by_name["phase_out"] == (enc[0], C)
    assert [n for n, _, _ in layers][-2:] == ["amp_out", "phase_out"]
    # probe_big only masks the output; it adds no layer
    assert conv_layers(N, C, False, scale, "unet") == layers
    assert len(layers) == 2 * len(enc) + 2 + 2 * len(enc) + 2


def test_names_and_shapes_follow_the_decoder():
    ref = ModelConfig(N=64, gridsize=2, filter_scale=0.25)
    unet = ModelConfig(N=64, gridsize=2, filter_scale=0.25, decoder="unet")
    s_ref, s_unet = canonical_shapes(ref), canonical_shapes(unet)
    assert "amp_dec0_conv0/kernel" in s_ref and "dec0_conv0/kernel" not in s_ref
    assert s_unet["dec0_conv0/kernel"] == (3, 3, 128 + 64, 64)
    assert s_unet["dec2_conv1/kernel"] == (3, 3, 16, 16)
    assert s_unet["amp_out/kernel"] == (3, 3, 16, 4)
    assert conv_layer_names(64, True, "unet") == [k[:-len("/kernel")] for k in s_unet
                                                  if k.endswith("/kernel")]
    n_unet = sum(math.prod(v) for k, v in s_unet.items() if k.endswith("/kernel"))
    assert 4.0e5 < n_unet < 5.0e5


def test_unknown_decoder_is_named():
    assert check_decoder("unet") == "unet" and DECODERS == ("reference", "unet")
    with pytest.raises(ValueError, match="decoder must be one of .*'transformer'"):
        conv_layers(64, 1, True, decoder="transformer")
    with pytest.raises(ConfigError, match="model.decoder: got 'Unet'"):
        ModelConfig(decoder="Unet")
