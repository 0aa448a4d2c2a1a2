"""The direct overlap fit: mechanics on a tiny scan; (slow) one pattern vs a gridsize-2 group."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import overlap_fit  # noqa: E402
from tests.benchmarks.bench_testdata import tiny_lines_scan, without_ground_truth  # noqa: E402


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return tiny_lines_scan(tmp_path_factory.mktemp("overlap"), 36, "--feature-density", "0.003")


def test_fit_lowers_the_nll_and_reports_each_k(scan, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert overlap_fit.main([str(scan), "--k", "1", "2", "--steps", "40", "--report-every", "10",
                             "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| 2 | 40 |" in table and "amplitude corr" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["k"] for r in rows] == [1, 2]
    for r in rows:
        gaps = [s["nll_above_truth"] for s in r["trajectory"]] + [r["nll_above_truth"]]
        assert [s["step"] for s in r["trajectory"]] == [10, 20, 30]
        assert gaps[-1] < gaps[0] and gaps[-1] > 0       # noiseless: the truth is the optimum
        assert np.isfinite(r["amplitude_corr"]) and np.isfinite(r["phase_corr"])


def test_bad_requests_are_refused(scan, tmp_path, capsys):
    with pytest.raises(SystemExit):
        overlap_fit.main([str(scan), "--k", "0"])
    assert "--k values must be in 1..36" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        overlap_fit.main([str(scan), "--centre", "99"])
    assert "--centre must be a pattern index" in capsys.readouterr().err
    with pytest.raises(ValueError, match="objectGuess"):
        overlap_fit.overlap_fit(str(without_ground_truth(scan, tmp_path)))


@pytest.mark.slow
def test_four_overlapping_patterns_fix_the_amplitude_one_does_not(scan):
    rows = overlap_fit.overlap_fit(str(scan), ks=(1, 4), steps=2000)["rows"]
    one, four = rows
    assert four["amplitude_corr"] > 0.9 and four["phase_corr"] > 0.95
    assert one["amplitude_corr"] < 0.7       # measured 0.53 after 2000 steps
