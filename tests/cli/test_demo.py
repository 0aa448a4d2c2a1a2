"""The end-to-end demo, on tiny sizes: every promised output is written and is real."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")


def test_demo_writes_every_output(tmp_path, capsys):
    from ptycho import demo

    out = tmp_path / "demo"
    assert demo.main(["--output-dir", str(out), "--n-patterns", "48", "--epochs", "1",
                      "--batch-size", "8", "--refine-steps", "4", "--com-phase-steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| SSIM |" in printed and "(missing)" not in printed
    assert "network alone" in printed and "after 4 refinement steps" in printed
    assert "after 1 centre-of-mass phase-correction steps" in printed
    assert printed.count("| SSIM |") == 3
    for rel in ("data/train.npz", "data/test.npz", "train/model/manifest.json",
                "train/loss_curve.png", "inference/reconstruction.npz",
                "inference/refinement.json", "inference/phase_correction.json",
                "inference/reconstructed_amplitude.png", "inference/torch_patch_stats.json",
                "inference/torch_patch_grid.png", "evaluation/comparison.png",
                "evaluation/frc.png"):
        assert (out / rel).is_file(), rel
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())["metrics"]
    assert np.isfinite(metrics["amp_ssim"]) and np.isfinite(metrics["phase_ssim"])
    manifest = json.loads((out / "train" / "model" / "manifest.json").read_text())
    assert manifest["config"]["model"]["filter_scale"] == demo.FILTER_SCALE
    assert manifest["config"]["model"]["decoder"] == demo.DECODER == "unet"
    assert "unet decoder" in printed
    assert manifest["config"]["model"]["projection_steps"] == 0 and "0 projection steps" in printed


def test_demo_passes_projection_and_phase_correction_steps(tmp_path, capsys):
    from ptycho import demo

    out = tmp_path / "demo"
    assert demo.main(["--output-dir", str(out), "--n-patterns", "40", "--epochs", "1",
                      "--batch-size", "8", "--gridsize", "2", "--decoder", "reference",
                      "--projection-steps", "2", "--refine-steps", "0",
                      "--com-phase-steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2 projection steps" in printed and "(missing)" not in printed
    assert "network alone" in printed and "after 1 centre-of-mass phase-correction steps" in printed
    info = json.loads((out / "inference" / "phase_correction.json").read_text())
    assert info["steps"] == 1
    assert info["metrics"]["phase_ssim"] != info["network_metrics"]["phase_ssim"]
    manifest = json.loads((out / "train" / "model" / "manifest.json").read_text())
    assert manifest["config"]["model"]["projection_steps"] == 2


@pytest.mark.parametrize("flag, value", [("--gridsize", "0"), ("--epochs", "0"),
                                         ("--batch-size", "-1"), ("--nphotons", "nan"),
                                         ("--refine-steps", "-1"), ("--n-patterns", "x"),
                                         ("--projection-steps", "-2"),
                                         ("--com-phase-steps", "-1")])
def test_bad_values_are_refused_before_anything_runs(tmp_path, capsys, flag, value):
    from ptycho import demo

    with pytest.raises(SystemExit) as info:
        demo.main(["--output-dir", str(tmp_path / "out"), flag, value])
    assert info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
