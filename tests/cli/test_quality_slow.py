"""Slow: a short CPU training on simulated ``lines`` data learns the held-out phase.

A regression guard for the quality defaults (softplus amplitude head, defocused default probe,
probe-weighted stitching, metrics on the illuminated region; docs/quality.md): through the
user-facing CLIs, N=64, 512 patterns per region, 1e9 photons, gridsize 1, 10 epochs of the
quarter-width network. Measured held-out phase SSIM 0.461 (PyTorch) and 0.458 (TensorFlow); an
untrained network or any one of the old defaults scores 0.0-0.2. The amplitude is not bounded
here: at this budget it is not yet learned on these objects (SSIM 0.046 on both backends,
docs/quality.md). One to two minutes per backend on two idle CPU cores. Selected with ``pytest -m slow tests/cli``.
"""

from __future__ import annotations

import json

import pytest

PHASE_SSIM_MIN = 0.35


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pytorch", "tensorflow"])
def test_short_training_learns_the_held_out_phase(tmp_path, backend):
    pytest.importorskip("torch" if backend == "pytorch" else "tensorflow")
    from ptycho import simulate
    from ptycho.cli import infer_main, train_main

    data = tmp_path / "data"
    assert simulate.main(["--output", str(data), "--object", "lines", "--N", "64",
                          "--n-patterns", "512", "--nphotons", "1e9", "--split", "region",
                          "--seed", "1", "--no-preview"]) == 0
    train_dir, infer_dir = tmp_path / "train", tmp_path / "inference"
    assert train_main(["--backend", backend, "--train_data_file", str(data / "train.npz"),
                       "--output_dir", str(train_dir), "--gridsize", "1", "--max_epochs", "10",
                       "--batch_size", "16", "--learning_rate", "1e-3", "--seed", "1",
                       "--filter_scale", "0.25", "--interpolation", "fourier",
                       "--logger", "none", "--accelerator", "cpu"]) == 0
    assert infer_main(["--model_path", str(train_dir), "--test_data", str(data / "test.npz"),
                       "--output_dir", str(infer_dir), "--accelerator", "cpu"]) == 0
    metrics = json.loads((infer_dir / "metrics.json").read_text())
    assert metrics["phase_ssim"] >= PHASE_SSIM_MIN, metrics
