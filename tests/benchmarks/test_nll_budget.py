"""The NLL budget ranks degraded objects above the true one on a noiseless scan."""

from __future__ import annotations

import json

import pytest

from benchmarks import nll_budget
from tests.benchmarks.bench_testdata import tiny_lines_scan, without_ground_truth


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return tiny_lines_scan(tmp_path_factory.mktemp("budget"), 24)


def test_every_degraded_object_costs_likelihood(scan):
    result = nll_budget.nll_budget(str(scan), n_patterns=16)
    rows = {r["object"]: r for r in result["rows"]}
    assert result["n_patterns"] == 16
    assert rows["true object"]["nll_above_truth"] == 0
    for name, row in rows.items():
        if name != "true object":
            assert row["nll_above_truth"] > 0, name
    assert rows["flat amplitude, zero phase"]["nll_above_truth"] > \
        rows["flat amplitude, true phase"]["nll_above_truth"]


def test_cli_writes_the_table(scan, tmp_path, capsys):
    out = tmp_path / "budget.json"
    assert nll_budget.main([str(scan), "--n-patterns", "8", "--json", str(out)]) == 0
    assert "above the true object" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["rows"]) == 5


def test_refuses_a_scan_without_ground_truth(tmp_path, scan):
    with pytest.raises(ValueError, match="objectGuess"):
        nll_budget.nll_budget(str(without_ground_truth(scan, tmp_path)))
