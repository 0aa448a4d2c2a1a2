"""The simulate CLI (``python -m ptycho.simulate``), run in-process through ``main(argv)``."""

import hashlib
import json
import re
import shlex
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from ptycho.data.contract import load_npz
from ptycho.objects import DEFAULT_FEATURE_DENSITY, DEFAULT_LINE_LENGTH_RANGE
from ptycho.probe import default_probe, normalize_probe
from ptycho.scan import probe_diameter
from ptycho.simulate import main

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--N", "32", "--n-patterns", "20"]


def _digest(data):
    h = hashlib.sha256()
    for arr in (data.diffraction, data.xcoords, data.ycoords, data.probe, data.object):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _nn(data):
    pos = data.positions
    d = np.hypot(pos[:, None, 0] - pos[None, :, 0], pos[:, None, 1] - pos[None, :, 1])
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def test_basic_run_writes_contract_file_preview_and_summary(tmp_path, capsys):
    out = tmp_path / "sub" / "sim.npz"
    assert main(["--output", str(out), *SMALL, "--seed", "3"]) == 0
    data = load_npz(out)
    assert data.M == 20 and data.N == 32 and data.object is not None
    assert data.diffraction.dtype == np.float32
    counts = data.diffraction.astype(np.float64) ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # Poisson counts
    with np.load(out, allow_pickle=False) as z:
        assert {"diff3d", "xcoords", "ycoords", "probeGuess", "objectGuess"} <= set(z.files)
    img = mpimg.imread(tmp_path / "sub" / "sim_preview.png")
    assert img[..., :3].std() > 0.05
    info = json.loads((tmp_path / "sub" / "sim_simulation.json").read_text())
    assert info["M"] == 20 and info["seed"] == 3 and info["object"] == "lines"
    assert "wrote" in capsys.readouterr().out


def test_same_seed_is_bitwise_identical_and_seed_matters(tmp_path):
    args = [*SMALL, "--scan", "random", "--object", "grf", "--no-preview"]
    digests = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert main(["--output", str(tmp_path / f"{name}.npz"), "--seed", str(seed), *args]) == 0
        digests.append(_digest(load_npz(tmp_path / f"{name}.npz")))
    assert digests[0] == digests[1] != digests[2]


def test_noise_flags_and_nphotons_reach_the_data(tmp_path):
    common = [*SMALL, "--no-preview", "--amplitude-range", "1", "1", "--phase-range", "0", "0",
              "--nphotons", "12345", "--jitter", "0", "--step", "3"]  # integer positions
    assert main(["--output", str(tmp_path / "clean.npz"), "--no-noise", *common]) == 0
    clean = load_npz(tmp_path / "clean.npz")
    # A transparent object: every pattern holds exactly nphotons.
    np.testing.assert_allclose((clean.diffraction.astype(np.float64) ** 2).sum(axis=(1, 2)),
                               12345, rtol=1e-5)
    counts = clean.diffraction.astype(np.float64) ** 2
    assert np.abs(counts - np.round(counts)).max() > 0.01  # not integer counts
    assert main(["--output", str(tmp_path / "noisy.npz"), "--noise", *common]) == 0
    noisy = load_npz(tmp_path / "noisy.npz")
    assert abs((noisy.diffraction.astype(np.float64) ** 2).sum(axis=(1, 2)).mean()
               - 12345) < 5 * np.sqrt(12345 / 20)


def test_overlap_and_step_set_the_raster_spacing(tmp_path):
    d = probe_diameter(default_probe(32))
    for flag, value, expected in (("--overlap", "0.5", 0.5 * d), ("--step", "3", 3.0)):
        out = tmp_path / f"{flag[2:]}.npz"
        assert main(["--output", str(out), *SMALL, "--jitter", "0", "--no-preview",
                     flag, value]) == 0
        assert np.median(_nn(load_npz(out))) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("scan", ["random", "fermat"])
def test_other_scans_and_underscore_flags(tmp_path, scan):
    out = tmp_path / "s.npz"
    assert main(["--output", str(out), "--N", "32", "--n_images", "30", "--object_size", "96",
                 "--scan", scan, "--no_preview", "--object", "points"]) == 0
    data = load_npz(out)
    assert data.M == 30 and data.object.shape == (96, 96)
    assert len(np.unique(np.round(data.positions, 6), axis=0)) == 30


def test_split_region_has_disjoint_footprints(tmp_path):
    assert main(["--output", str(tmp_path / "reg"), *SMALL, "--split", "region",
                 "--no-preview"]) == 0
    train, test = load_npz(tmp_path / "reg" / "train.npz"), load_npz(tmp_path / "reg" / "test.npz")
    np.testing.assert_array_equal(train.object, test.object)
    N = 32
    train_right = np.ceil(train.xcoords.max()) + N // 2     # last column a train patch touches
    test_left = np.floor(test.xcoords.min()) - N // 2       # first column of a test patch
    assert train_right < test_left
    assert train.M == test.M == 20
    assert not np.array_equal(train.diffraction, test.diffraction)


def test_split_objects_gives_two_objects(tmp_path):
    assert main(["--output", str(tmp_path / "obj"), *SMALL, "--split", "objects"]) == 0
    train, test = load_npz(tmp_path / "obj" / "train.npz"), load_npz(tmp_path / "obj" / "test.npz")
    assert train.object.shape == test.object.shape
    assert not np.allclose(train.object, test.object)
    assert (tmp_path / "obj" / "train_preview.png").is_file()
    assert (tmp_path / "obj" / "test_preview.png").is_file()


def test_probe_file_sets_probe_and_N(tmp_path):
    rng = np.random.default_rng(0)
    probe = default_probe(16) * np.exp(1j * rng.uniform(-0.3, 0.3, (16, 16)))
    np.savez(tmp_path / "probe.npz", probeGuess=probe.astype(np.complex64) * 5)
    out = tmp_path / "p.npz"
    assert main(["--output", str(out), "--probe", str(tmp_path / "probe.npz"), "--n-patterns",
                 "10", "--no-preview"]) == 0
    data = load_npz(out)
    assert data.N == 16
    np.testing.assert_allclose(data.probe, normalize_probe(probe), rtol=1e-5, atol=1e-6)
    assert main(["--output", str(out), "--probe", str(tmp_path / "probe.npz"), "--N", "32"]) == 2
    np.savez(tmp_path / "noprobe.npz", other=np.ones(3))
    assert main(["--output", str(out), "--probe", str(tmp_path / "noprobe.npz")]) == 2



@pytest.mark.parametrize("name", ["probe.txt", "probe.npy"])
def test_probe_file_that_is_not_npz_is_named(tmp_path, capsys, name):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, default_probe(16))
    else:
        path.write_bytes(b"not a probe\n")
    out = tmp_path / "p.npz"
    assert main(["--output", str(out), "--probe", str(path), "--no-preview"]) == 2
    err = capsys.readouterr().err
    assert "is not an NPZ archive" in err and str(path) in err
    assert "allow_pickle" not in err and not out.exists()


def test_image_object_through_cli(tmp_path):
    yy, xx = np.mgrid[0:50, 0:50]
    mpimg.imsave(tmp_path / "amp.png", xx / 49.0, cmap="gray")
    mpimg.imsave(tmp_path / "ph.png", yy / 49.0, cmap="gray")
    out = tmp_path / "img.npz"
    assert main(["--output", str(out), *SMALL, "--object", f"image:{tmp_path / 'amp.png'}",
                 "--phase-image", str(tmp_path / "ph.png"), "--no-preview"]) == 0
    obj = load_npz(out).object
    assert np.abs(obj)[:, -5:].mean() > np.abs(obj)[:, :5].mean() + 0.3
    assert np.angle(obj)[-5:].mean() > np.angle(obj)[:5].mean() + 2.0


def test_feature_density_reaches_the_object_and_summary(tmp_path):
    def run(name, *extra):
        out = tmp_path / name
        assert main(["--output", str(out), *SMALL, "--no-preview", *extra]) == 0
        summary = json.loads((tmp_path / (out.stem + "_simulation.json")).read_text())
        return load_npz(out).object, summary

    default, s_default = run("d.npz")
    sparse, s_sparse = run("s.npz", "--feature_density", "0.0005")
    assert s_default["feature_density"] == DEFAULT_FEATURE_DENSITY["lines"]
    assert s_sparse["feature_density"] == 0.0005
    assert s_default["line_length_range_px"] == list(DEFAULT_LINE_LENGTH_RANGE)
    assert np.mean(np.abs(sparse) < 0.95) < 0.5 * np.mean(np.abs(default) < 0.95)


def test_progress_bar(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "x.npz"), *SMALL, "--progress", "--no-preview"]) == 0
    assert "simulating" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--overlap", "1.5"], "--overlap must be a fraction"),
    (["--N", "33"], "--N must be an even integer"),
    (["--overlap", "0.5", "--step", "2"], "either --overlap or --step"),
    (["--nphotons", "-1"], "--nphotons must be"),
    (["--object-size", "40"], "scan does not fit"),
    (["--object", "blobs"], "unknown object spec 'blobs'"),
    (["--phase-image", "x.png"], "--phase-image needs --object image:PATH"),
    (["--probe", "missing.npz"], "does not exist"),
    (["--jitter", "-1"], "--jitter must be"),
    (["--feature-density", "0"], "--feature-density must be a finite number > 0"),
    (["--object", "grf", "--feature-density", "0.01"], "--feature-density applies to --object"),
])
def test_bad_values_give_clear_errors(tmp_path, capsys, argv, message):
    rc = main(["--output", str(tmp_path / "bad.npz"), *SMALL, "--no-preview", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()


def test_argument_errors(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "d.npz"), "--split", "region", *SMALL]) == 2
    assert "must be a directory" in capsys.readouterr().err
    assert main(["--output", str(tmp_path / "d.npz"), "--scan", "spiral"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["--n-patterns", "3"]) == 2  # --output missing
    assert main(["--help"]) == 0
    helptext = capsys.readouterr().out
    assert "default: 512" in helptext and "--n-patterns" in helptext and "pixels" in helptext


def test_sample_dataset_matches_documented_command(tmp_path):
    """datasets/sample_lines_N64.npz is what the command in datasets/README.md produces."""
    sample = REPO / "datasets" / "sample_lines_N64.npz"
    assert sample.stat().st_size < 2 * 1024 * 1024
    data = load_npz(sample)
    assert data.N == 64 and data.M == 200 and data.object is not None
    readme = (REPO / "datasets" / "README.md").read_text()
    cmd = re.search(r"^python -m ptycho\.simulate (.*sample_lines_N64\.npz.*)$", readme,
                    re.MULTILINE)
    assert cmd, "README must state the command that made the sample"
    argv = shlex.split(cmd.group(1))
    i = argv.index("--output")
    argv[i + 1] = str(tmp_path / "again.npz")
    assert main(argv + ["--no-preview"]) == 0
    assert _digest(load_npz(tmp_path / "again.npz")) == _digest(data)
