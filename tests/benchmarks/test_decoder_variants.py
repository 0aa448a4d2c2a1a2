"""The decoder-variant benchmark: network shapes, a short run end to end, bad input."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from benchmarks import decoder_variants  # noqa: E402
from tests.benchmarks.bench_testdata import tiny_lines_scan, without_ground_truth  # noqa: E402


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return tiny_lines_scan(tmp_path_factory.mktemp("decoder"), 24)


@pytest.mark.parametrize("skips", [True, False])
def test_network_maps_patterns_to_complex_patches_of_the_same_size(skips):
    torch.manual_seed(0)
    net = decoder_variants.build_network(3, skips)
    out = net(torch.rand(2, 1, 32, 32).contiguous(memory_format=torch.channels_last))
    assert out.shape == (2, 32, 32) and out.is_complex()
    assert torch.all(out.abs() > 0) and torch.all(out.angle().abs() <= math.pi)


def test_skip_connections_widen_the_decoder_inputs():
    n = {s: sum(p.numel() for p in decoder_variants.build_network(4, s).parameters())
         for s in (True, False)}
    assert n[True] > n[False]


@pytest.mark.parametrize("mode", ["pinn", "supervised"])
def test_short_run_trains_and_scores_both_regions(scan, tmp_path, capsys, mode):
    out = tmp_path / "r.json"
    assert decoder_variants.main([str(scan), str(scan), "--mode", mode, "--seconds", "1",
                                  "--width", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["mode"] == mode and r["steps"] > 0 and math.isfinite(r["final_loss"])
    for region in ("train_region", "held_out"):
        assert all(-1 <= r[region][k] <= 1 for k in ("amp_ssim", "phase_ssim"))
    assert "held_out: amplitude SSIM" in capsys.readouterr().out


def test_scan_without_ground_truth_is_refused_by_name(scan, tmp_path, capsys):
    bare = without_ground_truth(scan, tmp_path)
    assert decoder_variants.main([str(scan), str(bare), "--seconds", "1"]) == 2
    assert "bare.npz" in capsys.readouterr().out
