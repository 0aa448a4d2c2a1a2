"""The network-start vs flat-start refinement comparison, on one tiny trained run."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

from benchmarks import refine_start  # noqa: E402
from ptycho import simulate  # noqa: E402
from tests.benchmarks.bench_testdata import without_ground_truth  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(inference dir, test.npz, bundle) of a one-epoch PyTorch model on a tiny scan."""
    from ptycho_torch import inference, train

    d = tmp_path_factory.mktemp("refine_start")
    assert simulate.main(["--output", str(d / "data"), "--object", "grf", "--N", "32",
                          "--n-patterns", "30", "--nphotons", "1e7", "--split", "region",
                          "--seed", "4", "--no-preview"]) == 0
    assert train.main(["--train_data_file", str(d / "data" / "train.npz"), "--output_dir",
                       str(d / "train"), "--N", "32", "--max_epochs", "1", "--batch_size", "8",
                       "--accelerator", "cpu", "--logger", "none"]) == 0
    assert inference.main(["--model_path", str(d / "train" / "model"), "--test_data",
                           str(d / "data" / "test.npz"), "--output_dir", str(d / "inf"),
                           "--accelerator", "cpu"]) == 0
    return d / "inf", d / "data" / "test.npz", d / "train" / "model"


def test_both_starts_are_refined_and_scored_like_the_inference(run, tmp_path, capsys):
    inf, test, bundle = run
    out = tmp_path / "cmp.json"
    assert refine_start.main([str(inf), "--test-data", str(test), "--model_path", str(bundle),
                              "--steps", "0", "6", "--json", str(out)]) == 0
    assert "| network | 6 |" in capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {(r["start"], r["steps"]): r for r in result["rows"]}
    assert set(rows) == {("network", 0), ("network", 6), ("flat", 0), ("flat", 6)}
    network = json.loads((inf / "metrics.json").read_text())
    # Zero steps only rescales the amplitude, which the metrics align anyway.
    assert rows["network", 0]["amp_ssim"] == pytest.approx(network["amp_ssim"], abs=1e-5)
    assert rows["network", 0]["phase_ssim"] == pytest.approx(network["phase_ssim"], abs=1e-5)
    for start in ("network", "flat"):
        assert rows[start, 6]["nll_per_pattern"] < rows[start, 0]["nll_per_pattern"]
    # the training output directory names the same bundle
    again = tmp_path / "again.json"
    assert refine_start.main([str(inf), "--test-data", str(test), "--model_path",
                              str(bundle.parent), "--steps", "0", "--json", str(again)]) == 0
    assert json.loads(again.read_text())["intensity_scale"] == result["intensity_scale"]


def test_missing_inputs_are_reported(run, tmp_path, capsys):
    inf, test, bundle = run
    with pytest.raises(SystemExit):
        refine_start.main([str(tmp_path), "--test-data", str(test), "--model_path", str(bundle)])
    assert "no reconstruction.npz" in capsys.readouterr().err
    bare = without_ground_truth(test, tmp_path)
    with pytest.raises(SystemExit):
        refine_start.main([str(inf), "--test-data", str(bare), "--model_path", str(bundle)])
    assert "needs the ground truth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        refine_start.main([str(inf), "--test-data", str(test), "--model_path", str(bundle),
                           "--steps", "-2"])
    assert "--steps must be >= 0" in capsys.readouterr().err
