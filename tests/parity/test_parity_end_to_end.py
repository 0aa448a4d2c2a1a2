"""End to end: a bundle trained with one backend, converted, reconstructs the same object with
the other backend.

* gridsize 1: the trained bundle is converted with ``python -m ptycho.convert`` and inferred
  with the other backend's own CLI (``ptycho_torch.inference.main`` / ``ptycho.inference.main``
  in process); the original bundle is inferred with its own backend.
* gridsize 2: ``ptycho-infer --backend <other>`` converts on the fly.

The stitched objects agree: amplitude max abs diff <= 1e-4, phase too where the amplitude is
not negligible, same canvas, origin, mask and metrics; the patch statistics of the two runs
agree within 1e-4 relative.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")

from tests.parity.parity_tools import STATS_LIMIT  # noqa: E402

OTHER = {"tf": "torch", "torch": "tf"}
STAT_KEYS = ("global_mean", "global_std", "var_zero_mean", "global_min", "global_max")


def load_recon(out_dir):
    with np.load(out_dir / "reconstruction.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def assert_same_reconstruction(a_dir, b_dir):
    a, b = load_recon(a_dir), load_recon(b_dir)
    assert set(a) == set(b)
    for key in ("origin", "scanned_mask", "illuminated_mask", "scan_index", "canvas_y", "canvas_x",
                "stitch_crop"):
        assert np.array_equal(a[key], b[key]), key
    assert np.allclose(a["weight"], b["weight"], rtol=0, atol=1e-6)
    amp_a, amp_b = a["amplitude"], b["amplitude"]
    assert amp_a.shape == amp_b.shape and np.all(np.isfinite(amp_b))
    assert float(np.max(amp_a)) > 0.05, "degenerate reconstruction"
    diff = float(np.max(np.abs(amp_a - amp_b)))
    assert diff <= 1e-4, f"stitched amplitude: max abs diff {diff:.3g} > 1e-4"
    strong = amp_a > 0.05 * float(np.max(amp_a))
    dphi = np.angle(np.exp(1j * (a["phase"][strong] - b["phase"][strong])))
    assert float(np.max(np.abs(dphi))) <= 1e-3
    ma = json.loads((a_dir / "metrics.json").read_text())
    mb = json.loads((b_dir / "metrics.json").read_text())
    for key in ("amp_ssim", "phase_ssim", "amp_mae"):
        assert abs(ma[key] - mb[key]) <= 1e-4, (key, ma[key], mb[key])


def assert_same_patch_stats(a_path, b_path):
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    assert len(a) == len(b) == STATS_LIMIT
    for ea, eb in zip(a, b):
        assert ea["backend"] != eb["backend"]
        for key in ("phase", "batch_idx", "batch_size", "n_patches", "patch_shape", "gridsize"):
            assert ea[key] == eb[key], key
        pairs = [(ea[k], eb[k], k) for k in STAT_KEYS]
        for pa, pb in zip(ea["per_patch"], eb["per_patch"]):
            pairs += [(pa[k], pb[k], f"per_patch[{pa['index']}].{k}")
                      for k in ("mean", "std", "min", "max")]
        for va, vb, what in pairs:
            assert abs(va - vb) <= 1e-4 * max(abs(va), 1e-12), (what, va, vb)


@pytest.mark.parametrize("model_backend", ["tf", "torch"])
def test_converted_bundle_same_stitched_object(converted_run, infer_run, model_backend):
    bundle, out = converted_run(model_backend, 1)
    ref = infer_run(model_backend, 1, model_backend)
    assert_same_reconstruction(ref, out)
    assert_same_patch_stats(ref / f"{model_backend}_patch_stats.json",
                            out / f"{OTHER[model_backend]}_patch_stats.json")


@pytest.mark.parametrize("model_backend", ["tf", "torch"])
def test_on_the_fly_conversion_same_stitched_object(infer_run, model_backend):
    ref = infer_run(model_backend, 2, model_backend)
    out = infer_run(model_backend, 2, OTHER[model_backend])
    assert_same_reconstruction(ref, out)
    assert_same_patch_stats(ref / f"{model_backend}_patch_stats.json",
                            out / f"{OTHER[model_backend]}_patch_stats.json")


@pytest.mark.parametrize("gridsize", [1, 2])
def test_refinement_improves_the_fit_and_is_the_same_on_both_backends(parity_scan, train_run,
                                                                       tmp_path, gridsize):
    """``--refine-steps`` (gridsize 2 also ``--refine-probe``): both backends refine the same
    stitched object (and probe) to the same result, lower the NLL, keep the network's object,
    and record both sets of metrics."""
    from ptycho.cli import infer_main

    _, test_file = parity_scan
    outs = {}
    for run_backend in ("torch", "tf"):
        out = tmp_path / run_backend
        assert infer_main(["--model_path", str(train_run("torch", gridsize)), "--test_data",
                           str(test_file), "--output_dir", str(out), "--accelerator", "cpu",
                           "--backend", run_backend, "--refine-steps", "8",
                           "--refine-learning-rate", "0.03",
                           *(["--refine-probe"] if gridsize == 2 else [])]) == 0
        outs[run_backend] = out
    rec = {b: load_recon(o) for b, o in outs.items()}
    for b, out in outs.items():
        info = json.loads((out / "refinement.json").read_text())
        assert info["steps"] == 8 and info["learning_rate"] == 0.03
        assert info["nll_per_pattern_end"] < info["nll_per_pattern_start"]
        assert [h["step"] for h in info["history"]][0] == 0
        assert info["metrics"] == json.loads((out / "metrics.json").read_text())
        assert info["network_metrics"]["amp_mae"] != info["metrics"]["amp_mae"]
        assert int(rec[b]["refine_steps"]) == 8
        assert not np.allclose(rec[b]["object"], rec[b]["network_object"])
        assert info["refine_probe"] == (gridsize == 2)
        assert ("refined_probe" in rec[b]) == (gridsize == 2)
        timing = json.loads((out / "timing.json").read_text())
        assert timing["refine_s"] > 0
        assert (out / "refinement.png").stat().st_size > 1000
    mask = rec["torch"]["illuminated_mask"]
    a, b = rec["torch"]["object"][mask], rec["tf"]["object"][mask]
    assert float(np.max(np.abs(np.abs(a) - np.abs(b)))) <= 1e-3
    assert float(np.max(np.abs(np.angle(a * np.conj(b))))) <= 1e-3
    if gridsize == 2:
        pa, pb = rec["torch"]["refined_probe"], rec["tf"]["refined_probe"]
        assert float(np.max(np.abs(pa - pb))) <= 1e-3 * float(np.max(np.abs(pa)))
    # A run without refinement into the same folder leaves no stale refinement output.
    assert infer_main(["--model_path", str(train_run("torch", gridsize)), "--test_data",
                       str(test_file), "--output_dir", str(outs["torch"]), "--accelerator",
                       "cpu", "--backend", "torch"]) == 0
    assert not (outs["torch"] / "refinement.json").exists()
    assert not (outs["torch"] / "refinement.png").exists()
    assert "network_object" not in load_recon(outs["torch"])


@pytest.mark.parametrize("gridsize", [1, 2])
def test_both_backends_write_the_same_training_summary(train_run, gridsize):
    """The manifests' ``history_summary`` has the same keys and the same bookkeeping."""
    from ptycho.bundle import load_bundle

    tf_s = load_bundle(train_run("tf", gridsize) / "model").manifest["history_summary"]
    torch_s = load_bundle(train_run("torch", gridsize) / "model").manifest["history_summary"]
    assert set(tf_s) == set(torch_s) and set(tf_s["final"]) == set(torch_s["final"])
    for s in (tf_s, torch_s):
        assert s["epochs_run"] == 1 and s["best_epoch"] == 0 and s["monitor"] == "val_loss"
        assert s["stopped_early"] is False
        assert s["best_monitored_loss"] == pytest.approx(s["final"]["val_loss"])
    assert tf_s["intensity_scale_initial"] == torch_s["intensity_scale_initial"]


def test_centre_of_mass_phase_correction_is_the_same_on_both_backends(parity_scan, train_run,
                                                                      tmp_path):
    """``--com-phase-steps`` (with ``--projection-steps`` changed at inference): both backends
    correct the same stitched object to the same result, lower the centre-of-mass mismatch,
    leave the amplitude alone, keep the network's object and record both sets of metrics."""
    from ptycho.cli import infer_main

    _, test_file = parity_scan
    outs = {}
    for run_backend in ("torch", "tf"):
        out = tmp_path / run_backend
        assert infer_main(["--model_path", str(train_run("torch", 2)), "--test_data",
                           str(test_file), "--output_dir", str(out), "--accelerator", "cpu",
                           "--backend", run_backend, "--com-phase-steps", "2",
                           "--projection-steps", "2"]) == 0
        outs[run_backend] = out
    rec = {b: load_recon(o) for b, o in outs.items()}
    for b, out in outs.items():
        info = json.loads((out / "phase_correction.json").read_text())
        assert info["steps"] == 2 and info["smoothing"] == 0.5
        assert len(info["residual_rms_rad_per_px"]) == 3
        assert info["residual_rms_rad_per_px"][-1] < info["residual_rms_rad_per_px"][0]
        assert info["metrics"] == json.loads((out / "metrics.json").read_text())
        assert info["network_metrics"]["phase_mae"] != info["metrics"]["phase_mae"]
        assert abs(info["network_metrics"]["amp_mae"] - info["metrics"]["amp_mae"]) < 1e-6
        assert int(rec[b]["com_phase_steps"]) == 2 and int(rec[b]["projection_steps"]) == 2
        assert np.allclose(np.abs(rec[b]["object"]), np.abs(rec[b]["network_object"]), rtol=1e-5)
        assert not np.allclose(rec[b]["object"], rec[b]["network_object"])
        assert json.loads((out / "timing.json").read_text())["com_phase_s"] > 0
    mask = rec["torch"]["illuminated_mask"]
    a, b = rec["torch"]["object"][mask], rec["tf"]["object"][mask]
    assert float(np.max(np.abs(np.abs(a) - np.abs(b)))) <= 1e-3
    assert float(np.max(np.abs(np.angle(a * np.conj(b))))) <= 1e-3
    assert infer_main(["--model_path", str(train_run("torch", 2)), "--test_data",
                       str(test_file), "--output_dir", str(outs["torch"]), "--accelerator",
                       "cpu", "--backend", "torch"]) == 0
    assert not (outs["torch"] / "phase_correction.json").exists()
    assert "network_object" not in load_recon(outs["torch"])
