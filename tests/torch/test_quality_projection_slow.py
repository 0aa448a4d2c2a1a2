"""Slow: the configuration of docs/quality.md that meets the quality targets, on smaller data.

A gridsize-2 PyTorch model trained with per-group projections (`--projection_steps 5`) on a
`lines` region of 400 patterns, then the held-out region reconstructed through the inference
CLI with 20 projections and two centre-of-mass phase-correction steps, and through the same
physics from a flat network (`benchmarks.projection_start`). Checked: the correction raises the
phase SSIM and leaves the amplitude alone, the trained network beats the flat start on both,
and the result clears looser bounds than the issue's (the full-size run is in docs/quality.md).
Measured 2026-12-07 (3.7 idle CPU minutes): network 0.813 / 0.702 (phase 0.658 before the
correction), flat start 0.782 / 0.668 (amplitude / phase SSIM). Selected with
``pytest -m slow tests/torch``.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

AMP_FLOOR, PHASE_FLOOR = 0.7, 0.65


@pytest.mark.slow
def test_projections_and_phase_correction_beat_a_flat_start(tmp_path):
    from benchmarks.projection_start import projection_start
    from ptycho import simulate
    from ptycho_torch import train

    data = tmp_path / "data"
    assert simulate.main(["--output", str(data), "--object", "lines", "--N", "64",
                          "--n-patterns", "400", "--nphotons", "1e9", "--split", "region",
                          "--seed", "1", "--no-preview"]) == 0
    run = tmp_path / "run"
    assert train.main(["--train_data_file", str(data / "train.npz"), "--test_data_file",
                       str(data / "test.npz"), "--output_dir", str(run), "--gridsize", "2",
                       "--projection_steps", "5", "--filter_scale", "0.25", "--interpolation",
                       "fourier", "--lr_schedule", "cosine", "--learning_rate", "2e-3",
                       "--min_learning_rate", "4e-5", "--batch_size", "8", "--max_epochs", "8",
                       "--early_stopping_patience", "100", "--logger", "none",
                       "--accelerator", "cpu", "--seed", "0"]) == 0
    rows = projection_start(str(run), str(data / "test.npz"), str(tmp_path / "cmp"), [20],
                            com_phase_steps=2)
    by_start = {r["start"]: r for r in rows}
    net, flat = by_start["network"], by_start["flat"]
    info = json.loads((tmp_path / "cmp" / "network_K20" / "inference" /
                       "phase_correction.json").read_text())
    assert info["metrics"]["phase_ssim"] > info["network_metrics"]["phase_ssim"]
    assert abs(info["metrics"]["amp_ssim"] - info["network_metrics"]["amp_ssim"]) < 1e-6
    assert net["amp_ssim"] > flat["amp_ssim"] and net["phase_ssim"] > flat["phase_ssim"], rows
    assert net["amp_ssim"] >= AMP_FLOOR and net["phase_ssim"] >= PHASE_FLOOR, net
