"""Unit tests of the benchmark harness pieces that need neither a backend run nor Pty-chi."""
import math
import sys
import time

import numpy as np
import pytest

from benchmarks import flops, scenarios
from benchmarks.backends import (epoch_times, summarise_epochs, tqdm_epoch_times,
                                 train_flags, training_rates)
from benchmarks.evaluate import clean, illumination_mask, quality
from benchmarks.measure import CommandError, run_command
from benchmarks.ptychi_runner import load_scan, ptychi_probe
from benchmarks.scaling import fit_memory


# ------------------------------------------------------------------------------ flops
def test_conv_layers_follow_the_contract_network():
    layers = flops.conv_layers(64, 1, probe_big=True)
    names = [n for n, *_ in layers]
    assert names[:6] == ["enc0_conv0", "enc0_conv1", "enc1_conv0", "enc1_conv1", "enc2_conv0",
                         "enc2_conv1"]
    assert "amp_big_out" in names and "phase_dec1_conv1" in names
    assert len(layers) == 6 + 2 * (4 + 2)
    shapes = {n: (h, cin, cout) for n, h, _, cin, cout in layers}
    assert shapes["enc0_conv0"] == (64, 1, 64)
    assert shapes["enc2_conv1"] == (16, 256, 256)
    assert shapes["amp_dec0_conv0"] == (8, 256, 128)
    assert shapes["amp_out"] == (32, 64, 1)
    assert shapes["amp_big_out"] == (64, 64, 1)
    assert "amp_big_out" not in [n for n, *_ in flops.conv_layers(64, 1, probe_big=False)]


def test_flop_count_matches_hand_computation():
    def conv(s, cin, cout):
        return 2 * s * s * 9 * cin * cout

    enc = conv(64, 1, 64) + conv(64, 64, 64) + conv(32, 64, 128) + conv(32, 128, 128) \
        + conv(16, 128, 256) + conv(16, 256, 256)
    dec = conv(8, 256, 128) + conv(8, 128, 128) + conv(16, 128, 64) + conv(16, 64, 64) \
        + conv(32, 64, 1) + conv(64, 64, 1)
    assert flops.forward_flops_per_group(64, 1, True) == enc + 2 * dec
    g2 = flops.forward_flops_per_group(64, 2, True)
    assert flops.flops_per_pattern(64, 2, True) == pytest.approx(g2 / 4)
    assert flops.flops_per_pattern(64, 1, True, train=True) == pytest.approx(3 * (enc + 2 * dec))


@pytest.mark.parametrize("N, g", [(48, 1), (8, 1), (64, 0)])
def test_conv_layers_rejects_bad_sizes(N, g):
    with pytest.raises(ValueError):
        flops.conv_layers(N, g)


# ------------------------------------------------------------------------------ scenarios
def test_parse_scenarios_names_and_errors():
    s = scenarios.parse_scenarios(["lines-hi-g1", "grf-lo-g2", "lines-hi-g1"])
    assert [x.name for x in s] == ["lines-hi-g1", "grf-lo-g2"]
    assert s[1].nphotons == 1e4 and s[1].gridsize == 2 and s[1].data_key == "grf-lo"
    assert len(scenarios.parse_scenarios(["all"])) == 8
    for bad in ("lines-mid-g1", "disk-hi-g1", "lines-hi-2", "lines-hi-g0", "lines"):
        with pytest.raises(ValueError, match="bad scenario"):
            scenarios.parse_scenarios([bad])


def test_default_scenarios_cover_both_objects_doses_and_gridsizes():
    full = scenarios.default_scenarios(quick=False)
    assert {(s.obj, s.dose) for s in full} == {(o, d) for o in scenarios.OBJECTS
                                              for d in scenarios.DOSES}
    assert {s.gridsize for s in full} == {1, 2}
    assert scenarios.FULL.n_train % 8 == 0 and scenarios.QUICK.n_train % 8 == 0


# ------------------------------------------------------------------------------ measure
def test_run_command_measures_child_memory_and_exit(tmp_path):
    code = "import numpy as np; a = np.ones(40_000_000); print(a.sum())"
    r = run_command([sys.executable, "-c", code], tmp_path / "a.log")
    assert r.returncode == 0 and r.wall_s > 0
    assert r.peak_rss_mb > 300  # 40e6 float64 = 305 MiB held by the child
    assert "40000000.0" in (tmp_path / "a.log").read_text()
    with pytest.raises(CommandError, match="exit 3"):
        run_command([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "b.log")
    r = run_command([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "c.log",
                    check=False)
    assert r.returncode == 3


def test_run_command_timeout_and_file_marks(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(CommandError, match="timed out"):
        run_command([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "t.log",
                    timeout_s=1.0)
    assert time.perf_counter() - t0 < 10
    target = tmp_path / "mark.txt"
    # Written atomically (as the training CLIs write their files): one mtime change per write.
    # A plain write_text truncates and then writes, two changes a poll may fall between.
    code = ("import os, time, pathlib\n"
            f"p = pathlib.Path({str(target)!r})\n"
            "for i in range(3):\n"
            "    time.sleep(0.3); t = p.with_suffix('.tmp'); t.write_text(str(i));"
            " os.replace(t, p)\n")
    r = run_command([sys.executable, "-c", code], tmp_path / "m.log", watch_file=target)
    assert len(r.marks) == 3
    assert all(b - a > 0.15 for a, b in zip(r.marks, r.marks[1:]))


# ------------------------------------------------------------------------------ backends
def test_epoch_times_from_history_progress_bar_or_marks():
    assert epoch_times({"time_s": [5.0, 2.0, 2.2]}, [1, 2]) == ([5.0, 2.0, 2.2], True,
                                                              "history time_s")
    log = ("Epoch 0:  50%|##   | 1/2 [00:03<00:03]\rEpoch 0: 100%|#####| 2/2 [00:07<00:00, x]"
           "\rEpoch 0: 100%|#####| 2/2 [00:09<00:00, val]\n"
           "Epoch 1: 100%|#####| 2/2 [01:05<00:00, val]\rEpoch 2: 100%|#####| 2/2 "
           "[1:00:02<00:00]\n")
    assert tqdm_epoch_times(log) == [9.0, 65.0, 3602.0]
    t, first, src = epoch_times({"epoch": [0, 1, 2]}, [], log)
    assert t == [9.0, 65.0, 3602.0] and first and "progress" in src
    t, first, src = epoch_times({"epoch": [0, 1, 2, 3]}, [10.0, 12.5, 15.5], log)
    assert t == pytest.approx([2.5, 3.0]) and first is False and src == "checkpoint mtimes"
    s = summarise_epochs([5.0, 2.0, 2.2, 2.4], True, 30.0, 4)
    assert s["epoch_s"] == pytest.approx(2.2) and s["first_epoch_s"] == 5.0
    s = summarise_epochs([2.5, 3.0], False, 30.0, 3)
    assert s["epoch_s"] == pytest.approx(2.75) and s["first_epoch_s"] is None
    s = summarise_epochs([], False, 30.0, 1)
    assert s["epoch_s"] == 30.0 and "wall" in s["epoch_time_source"]
    r = training_rates({"epoch_s": 2.0}, 100, 1)
    assert r["patterns_per_s"] == 50.0
    assert r["gflops"] == pytest.approx(50.0 * flops.flops_per_pattern(
        64, 1, True, True, filter_scale=scenarios.FILTER_SCALE) / 1e9)


def test_train_flags_are_shared_cli_flags():
    import argparse

    from ptycho.cli_common import add_execution_arguments, add_training_arguments

    p = add_execution_arguments(add_training_arguments(argparse.ArgumentParser()))
    ns = p.parse_args(train_flags("a.npz", "out", gridsize=2, epochs=3, batch_size=8,
                                  validation_fraction=0.125))
    assert (ns.gridsize, ns.max_epochs, ns.batch_size, ns.accelerator) == (2, 3, 8, "cpu")
    assert ns.validation_fraction == 0.125 and ns.early_stopping_patience == 4


# ------------------------------------------------------------------------------ evaluate
def _toy_scan():
    from ptycho.probe import default_probe

    rng = np.random.default_rng(0)
    obj = (1 + 0.1 * rng.standard_normal((96, 96))) * np.exp(1j * rng.uniform(-1, 1, (96, 96)))
    from scipy.ndimage import gaussian_filter

    obj = gaussian_filter(obj.real, 1) + 1j * gaussian_filter(obj.imag, 1)
    pos = np.array([(y, x) for y in (40.0, 48.0, 56.0) for x in (40.0, 48.0, 56.0)])
    return obj.astype(np.complex64), default_probe(32), pos


def test_illumination_mask_and_quality():
    obj, probe, pos = _toy_scan()
    mask = illumination_mask(probe, pos, obj.shape)
    assert mask.shape == obj.shape and mask[48, 48] and not mask[0, 0] and not mask[95, 95]
    q = quality(obj, obj, mask)
    assert q["amp_ssim"] == pytest.approx(1.0) and q["phase_ssim"] == pytest.approx(1.0)
    assert q["amp_psnr"] is None  # inf -> None, JSON-safe
    # a canvas with an origin is placed back on the object grid
    crop = obj[20:80, 10:90]
    q2 = quality(crop, obj, mask, origin=(20, 10))
    assert q2["amp_ssim"] == pytest.approx(1.0)
    noisy = obj * np.exp(1j * 0.3 * np.random.default_rng(1).standard_normal(obj.shape))
    assert quality(noisy, obj, mask)["phase_ssim"] < 0.9
    with pytest.raises(ValueError):
        illumination_mask(probe, pos, obj.shape, fraction=1.5)


def test_clean_makes_json_safe():
    assert clean({"a": float("inf"), "b": [np.float32(1.5), float("nan")], 3: np.int64(2)}) == \
        {"a": None, "b": [1.5, None], "3": 2}


# ------------------------------------------------------------------------------ Pty-chi conventions
def test_ptychi_probe_scale_gives_the_dose():
    """With Pty-chi's unnormalised fft2, a transparent object must give nphotons per pattern."""
    from ptycho.probe import default_probe

    N, nph = 32, 1e6
    P = ptychi_probe(default_probe(N), nph)
    assert P.shape == (1, 1, N, N) and P.dtype == np.complex64
    total = np.sum(np.abs(np.fft.fft2(P[0, 0].astype(np.complex128))) ** 2)
    assert total == pytest.approx(nph, rel=1e-5)
    with pytest.raises(ValueError, match="zeros"):
        ptychi_probe(np.zeros((N, N)), nph)


def test_ptychi_runner_load_scan_validates(tmp_path):
    from ptycho.data.contract import save_npz
    from ptycho.simulate import simulate_scan

    obj, probe, pos = _toy_scan()
    data = simulate_scan(obj, probe, pos, 1e6, np.random.default_rng(0))
    good = tmp_path / "good.npz"
    save_npz(good, data)
    scan = load_scan(str(good))
    assert scan["diffraction"].shape == (9, 32, 32) and scan["object"].shape == obj.shape
    arrays = data.to_arrays()
    del arrays["objectGuess"]
    np.savez(tmp_path / "noobj.npz", **arrays)
    with pytest.raises(ValueError, match="objectGuess"):
        load_scan(str(tmp_path / "noobj.npz"))
    arrays = data.to_arrays()
    arrays["xcoords"] = arrays["xcoords"][:3]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match="xcoords"):
        load_scan(str(tmp_path / "short.npz"))


# ------------------------------------------------------------------------------ scaling
def test_fit_memory_slope_and_extrapolation():
    f = fit_memory([1000, 10000], [600.0, 888.0])
    assert f["slope_mb_per_1k"] == pytest.approx(32.0)
    assert f["rss_at_100k_mb"] == pytest.approx(568.0 + 3200.0)
    assert fit_memory([1000], [600.0])["slope_mb_per_1k"] is None
    assert math.isfinite(fit_memory([1, 2, 3], [1.0, 1.0, 1.0])["slope_mb_per_1k"])


def test_run_command_peak_is_the_childs_not_the_parents(tmp_path):
    import numpy as np

    big = np.ones(80_000_000)                       # 610 MiB: raises this process's peak RSS
    del big
    code = "import time; time.sleep(0.5)"
    r = run_command([sys.executable, "-c", code], tmp_path / "small.log")
    assert r.peak_rss_mb < 300                      # a bare interpreter, not the parent's peak


def test_unet_layers_run_at_their_stage_sides():
    layers = {n: (h, cin, cout) for n, h, w, cin, cout in
              flops.conv_layers(64, 1, True, filter_scale=0.25, decoder="unet")}
    assert layers["enc0_conv0"] == (64, 1, 16) and layers["enc2_conv1"] == (16, 64, 64)
    assert layers["mid_conv0"] == (8, 64, 128)
    assert layers["dec0_conv0"] == (16, 128 + 64, 64) and layers["dec2_conv0"] == (64, 32 + 16, 16)
    assert layers["amp_out"] == layers["phase_out"] == (64, 16, 1)
    ref = flops.forward_flops_per_group(64, 1, True, 0.25)
    unet = flops.forward_flops_per_group(64, 1, True, 0.25, "unet")
    assert unet == pytest.approx(sum(2 * h * h * 9 * cin * cout
                                     for h, cin, cout in layers.values()))
    assert unet > 2 * ref
