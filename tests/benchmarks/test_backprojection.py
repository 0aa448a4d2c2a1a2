"""The no-learning back-projection baseline: exact on a flat object, runs end to end on a scan."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import backprojection
from ptycho.physics import diffraction_amplitude
from ptycho.probe import default_probe
from tests.benchmarks.bench_testdata import tiny_lines_scan, without_ground_truth


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return tiny_lines_scan(tmp_path_factory.mktemp("backprojection"), 36)


@pytest.mark.parametrize("iterations", [0, 3])
def test_a_flat_object_is_recovered_where_the_probe_is_bright(iterations):
    probe = default_probe(32)
    flat = np.ones((2, 32, 32), np.complex128) * np.exp(0.3j)
    amplitudes = diffraction_amplitude(flat, probe)
    obj = backprojection.backproject_patches(amplitudes, probe, iterations)
    bright = np.abs(probe) ** 2 >= 0.1 * np.max(np.abs(probe) ** 2)
    # The measured amplitude of a constant object is that of the bare probe: the back-projection
    # returns the probe itself, so the object is constant up to the regularisation, which shrinks
    # pixels at 10 % of the peak intensity by about 1 % per division.
    ratio = obj[:, bright] / obj[:, bright].mean(axis=1, keepdims=True)
    assert np.max(np.abs(ratio - 1)) < 0.011 * (iterations + 1)
    assert obj.shape == (2, 32, 32)


def test_the_cli_scores_every_iteration_count(scan, tmp_path, capsys):
    out = tmp_path / "bp.json"
    assert backprojection.main([str(scan), "--iterations", "0", "2", "--json", str(out)]) == 0
    assert "| 2 |" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["n_patterns"] == 36 and [r["iterations"] for r in result["rows"]] == [0, 2]
    for r in result["rows"]:
        assert -1 <= r["amp_ssim"] <= 1 and -1 <= r["phase_ssim"] <= 1
        assert np.isfinite(r["amp_psnr"]) and np.isfinite(r["phase_psnr"])


def test_bad_requests_are_refused(scan, tmp_path, capsys):
    with pytest.raises(SystemExit):
        backprojection.main([str(scan), "--iterations", "-1"])
    assert "iterations must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        backprojection.main([str(without_ground_truth(scan, tmp_path))])
    assert "objectGuess" in capsys.readouterr().err
    with pytest.raises(ValueError, match="probe's N"):
        backprojection.backproject_patches(np.ones((1, 16, 16)), default_probe(32))
