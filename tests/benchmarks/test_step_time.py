"""The step-time benchmark times what it says: its per-canvas overlap constraint is the library's
constraint computed the reference way, in both backends, and its CLI writes every timing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import step_time
from ptycho import physics


@pytest.fixture
def group():
    rng = np.random.default_rng(5)
    patches = (rng.normal(size=(3, 4, 16, 16)) + 1j * rng.normal(size=(3, 4, 16, 16)))
    offsets = rng.uniform(-5, 5, size=(3, 4, 2))
    return patches, offsets


def test_torch_per_canvas_form_matches_library_and_reference(group):
    import torch

    from ptycho_torch import helper

    patches, offsets = group
    p, o = torch.from_numpy(patches), torch.from_numpy(offsets)
    thr = physics.FOURIER_OVERLAP_THRESHOLD
    slow = step_time.per_canvas_reassemble_torch(p, o, 8, thr).numpy()
    fast = helper.group_reassemble(p, o, pad=8, interpolation="fourier").numpy()
    ref = physics.group_reassemble(patches, offsets, pad=8, interpolation="fourier")
    np.testing.assert_allclose(slow, ref, atol=1e-10)
    np.testing.assert_allclose(fast, ref, atol=1e-10)


def test_tf_per_canvas_form_matches_library_and_reference(group):
    import tensorflow as tf

    from ptycho import tf_helper

    patches, offsets = group
    thr = physics.FOURIER_OVERLAP_THRESHOLD
    slow = step_time.per_canvas_reassemble_tf(tf.constant(patches), tf.constant(offsets), 8,
                                              thr).numpy()
    fast = tf_helper.group_reassemble(tf.constant(patches), tf.constant(offsets), pad=8,
                                      interpolation="fourier").numpy()
    ref = physics.group_reassemble(patches, offsets, pad=8, interpolation="fourier")
    np.testing.assert_allclose(slow, ref, atol=1e-10)
    np.testing.assert_allclose(fast, ref, atol=1e-10)


def test_cli_reports_every_timing(tmp_path, capsys):
    out = tmp_path / "steps.json"
    assert step_time.main(["--gridsize", "1", "2", "--N", "32", "--batch-size", "2",
                           "--repeats", "1", "--json", str(out)]) == 0
    assert "per-canvas form" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backend"], r["gridsize"]) for r in rows] == [
        ("pytorch", 1), ("pytorch", 2), ("tensorflow", 1), ("tensorflow", 2)]
    for r in rows:
        assert r["train_step_s"] > 0
        if r["gridsize"] == 2:
            assert r["reassemble_s"] > 0 and r["reassemble_per_canvas_s"] > 0
        else:
            assert "reassemble_s" not in r
