"""The network-start vs flat-start comparison of a model with per-group projections."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from benchmarks import projection_start  # noqa: E402
from ptycho import simulate  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(training dir, test.npz) of a one-epoch gridsize-2 PyTorch model with 2 projections."""
    from ptycho_torch import train

    d = tmp_path_factory.mktemp("projection_start")
    assert simulate.main(["--output", str(d / "data"), "--object", "lines", "--N", "32",
                          "--n-patterns", "40", "--nphotons", "1e7", "--split", "region",
                          "--seed", "4", "--no-preview"]) == 0
    assert train.main(["--train_data_file", str(d / "data" / "train.npz"), "--output_dir",
                       str(d / "train"), "--N", "32", "--gridsize", "2", "--max_epochs", "1",
                       "--batch_size", "8", "--projection_steps", "2", "--filter_scale", "0.25",
                       "--accelerator", "cpu", "--logger", "none"]) == 0
    return d / "train", d / "data" / "test.npz"


def test_flat_weights_give_unit_amplitude_and_zero_phase(run, tmp_path):
    from ptycho.bundle import load_bundle
    from ptycho_torch.inference import load_model

    bundle = load_bundle(run[0] / "model")
    model_dir = projection_start.write_variant_bundle(bundle, tmp_path / "flat", 0, flat=True)
    flat = load_bundle(model_dir)
    assert flat.config.model.projection_steps == 0 and flat.config.model.gridsize == 2
    X = torch.rand(3, 4, 32, 32)
    amp, phase = load_model(flat).network(X)
    assert torch.allclose(amp, torch.ones_like(amp), atol=1e-6)
    assert torch.all(phase == 0)


def test_both_starts_are_inferred_and_scored(run, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert projection_start.main(["--model_path", str(run[0]), "--test_data", str(run[1]),
                                  "--output_dir", str(out), "--steps", "0", "2"]) == 0
    assert "| flat | 2 |" in capsys.readouterr().out
    rows = json.loads((out / "projection_start.json").read_text())["rows"]
    assert [(r["start"], r["projection_steps"]) for r in rows] == [
        ("network", 0), ("flat", 0), ("network", 2), ("flat", 2)]
    assert all(np.isfinite(r["amp_ssim"]) and np.isfinite(r["phase_ssim"]) for r in rows)
    # a flat start without projections is a constant object: nothing of the truth in it
    flat0 = np.load(out / "flat_K0" / "inference" / "reconstruction.npz")
    mask = flat0["illuminated_mask"]
    assert np.ptp(flat0["amplitude"][mask]) < 1e-3
    # with projections the flat start picks up structure from the data
    flat2 = np.load(out / "flat_K2" / "inference" / "reconstruction.npz")
    assert np.std(flat2["amplitude"][mask]) > 10 * np.std(flat0["amplitude"][mask])
