"""Patch-statistics guards through the unified CLIs: backend x gridsize {1, 2} x phase
{train, inference}.

Every run logs statistics of the model's predicted patches for at most ``STATS_LIMIT`` batches
per phase; each phase here has more batches than that, so exactly ``STATS_LIMIT`` entries must
be present. Every entry is finite and not collapsed (``var_zero_mean > 1e-6``,
``|global_mean| > 1e-9``) and names its backend and gridsize; the PNG grid exists and is not
blank.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")

from tests.parity.parity_tools import STATS_LIMIT  # noqa: E402


def check_entries(path, backend, gridsize, phase):
    entries = json.loads(path.read_text())
    mine = [e for e in entries if e["phase"] == phase]
    assert len(mine) == STATS_LIMIT, f"{path}: {len(mine)} {phase} entries, want {STATS_LIMIT}"
    assert [e["batch_idx"] for e in mine] == list(range(STATS_LIMIT))
    for e in mine:
        assert e["backend"] == backend and e["gridsize"] == gridsize, e
        assert e["all_finite"] and e["n_nonfinite"] == 0, e
        values = [e[k] for k in ("global_mean", "global_std", "var_zero_mean", "global_min",
                                 "global_max")]
        assert all(v is not None and np.isfinite(v) for v in values), e
        assert e["var_zero_mean"] > 1e-6, e
        assert abs(e["global_mean"]) > 1e-9, e
        assert e["n_patches"] == e["batch_size"] * gridsize ** 2
        assert e["per_patch"] and all(np.isfinite(p["std"]) for p in e["per_patch"])


def check_png(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    assert img.ndim == 3 and min(img.shape[:2]) > 50
    assert float(img[..., :3].std()) > 0.01


@pytest.mark.parametrize("gridsize", [1, 2])
@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_train_phase(train_run, backend, gridsize):
    out = train_run(backend, gridsize)
    check_entries(out / f"{backend}_patch_stats.json", backend, gridsize, "train")
    check_png(out / f"{backend}_patch_grid.png")
    assert (out / "model" / "manifest.json").is_file()


@pytest.mark.parametrize("gridsize", [1, 2])
@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_inference_phase(infer_run, backend, gridsize):
    out = infer_run(backend, gridsize, backend)
    check_entries(out / f"{backend}_patch_stats.json", backend, gridsize, "inference")
    check_png(out / f"{backend}_patch_grid.png")
    assert (out / "reconstruction.npz").is_file()
