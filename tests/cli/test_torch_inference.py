"""PyTorch inference CLI on an untrained bundle: outputs without ground truth, refusals."""
import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ptycho import simulate  # noqa: E402
from ptycho.bundle import write_bundle  # noqa: E402
from ptycho.config import PtychoConfig  # noqa: E402
from ptycho.data.contract import PtychoData, load_npz, save_npz  # noqa: E402
from ptycho.payload import DataStatistics, TrainingPayload  # noqa: E402
from ptycho_torch import inference  # noqa: E402
from ptycho_torch.model import PtychoPINN  # noqa: E402
from ptycho_torch.workflows.components import load_state_dict, save_state_dict  # noqa: E402


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("inf_data")
    assert simulate.main(["--output", str(d / "scan.npz"), "--N", "32", "--n-patterns", "21",
                          "--object", "grf", "--nphotons", "1e6", "--seed", "6",
                          "--no-preview"]) == 0
    data = load_npz(d / "scan.npz")
    bare = PtychoData(diffraction=data.diffraction, xcoords=data.xcoords, ycoords=data.ycoords,
                      probe=data.probe)
    save_npz(d / "no_object.npz", bare)
    return d / "scan.npz", d / "no_object.npz", data


def _bundle(path, data, gridsize=1, weights_gridsize=None, backend="torch", scale_factor=1.0):
    config = PtychoConfig.from_dict({"model": {"N": 32, "gridsize": gridsize}})
    stats = DataStatistics.from_amplitudes(data.diffraction)
    payload = TrainingPayload(config=config, stats=stats, probe=data.probe)
    torch.manual_seed(0)
    wcfg = PtychoConfig.from_dict({"model": {"N": 32, "gridsize": weights_gridsize or gridsize}})
    model = PtychoPINN(wcfg.model, data.probe, stats.intensity_scale, stats.normalization_factor)
    return write_bundle(path, backend=backend, payload=payload,
                        write_weights=lambda p: save_state_dict(model, p),
                        weights_filename="model.pt",
                        intensity_scale=stats.intensity_scale * scale_factor,
                        history_summary={})


def _run(bundle, data_path, out, *extra):
    return inference.main(["--model_path", str(bundle), "--test_data", str(data_path),
                           "--output_dir", str(out), "--accelerator", "cpu", *extra])


@pytest.mark.parametrize("gridsize", [1, 2])
def test_every_group_is_predicted_and_stitched_without_ground_truth(scan, tmp_path, gridsize):
    _, no_object, data = scan
    bundle = _bundle(tmp_path / "b", data, gridsize=gridsize)
    assert _run(bundle, no_object, tmp_path / "out", "--batch_size", "8") == 0  # 8 + 8 + 5
    out = tmp_path / "out"
    assert not (out / "metrics.json").exists()
    timing = json.loads((out / "timing.json").read_text())
    assert timing["n_groups"] == 21 and timing["n_patterns"] == 21 * gridsize ** 2
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        mask, y, x = z["scanned_mask"], z["canvas_y"], z["canvas_x"]
        # every scan position lies inside the scanned region of the canvas
        rows = np.searchsorted(y, np.round(data.ycoords))
        cols = np.searchsorted(x, np.round(data.xcoords))
        assert mask[rows, cols].all()
        # metrics are judged where the probe reached: inside the stitched region, at every
        # scan position, and smaller than the stitched footprint
        lit = z["illuminated_mask"]
        assert lit[rows, cols].all() and not (lit & ~mask).any() and lit.sum() < mask.sum()
        assert z["object"].shape == mask.shape and int(z["stitch_crop"]) == 32
        assert np.array_equal(z["scan_index"], np.arange(21))
        np.testing.assert_allclose(z["scan_positions"] + z["origin"], data.positions)


def test_bundle_without_intensity_scale_is_refused(scan, tmp_path, capsys):
    scan_path, _, data = scan
    bundle = _bundle(tmp_path / "b", data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["intensity_scale"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert _run(bundle, scan_path, tmp_path / "out") == 2
    assert "intensity_scale is missing" in capsys.readouterr().err


def test_intensity_scale_disagreeing_with_the_weights_is_refused(scan, tmp_path, capsys):
    scan_path, _, data = scan
    bundle = _bundle(tmp_path / "b", data, scale_factor=2.0)
    assert _run(bundle, scan_path, tmp_path / "out") == 2
    assert "intensity scale" in capsys.readouterr().err


def test_tf_bundle_and_wrong_weights_are_refused(scan, tmp_path, capsys):
    scan_path, _, data = scan
    tf = _bundle(tmp_path / "tf", data, backend="tf")
    assert _run(tf, scan_path, tmp_path / "o1") == 2
    assert "'tf' bundle" in capsys.readouterr().err
    mismatch = _bundle(tmp_path / "mm", data, gridsize=2, weights_gridsize=1)
    assert _run(mismatch, scan_path, tmp_path / "o2") == 2
    assert "do not fit" in capsys.readouterr().err


def test_missing_inputs_are_reported(scan, tmp_path, capsys):
    scan_path, _, data = scan
    assert _run(tmp_path / "nowhere", scan_path, tmp_path / "o") == 2
    assert "manifest.json" in capsys.readouterr().err
    assert inference.main(["--model_path", str(_bundle(tmp_path / "b", data)),
                           "--output_dir", str(tmp_path / "o")]) == 2
    assert "test_data" in capsys.readouterr().err


def test_weights_are_never_unpickled(tmp_path):
    from fractions import Fraction

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "obj": Fraction(1, 3)}, path)  # an arbitrary Python object
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict(path)


def test_rerun_without_ground_truth_removes_the_earlier_metrics(scan, tmp_path, capsys):
    scan_path, no_object, data = scan
    bundle = _bundle(tmp_path / "b", data, gridsize=2)
    out = tmp_path / "out"
    assert _run(bundle, scan_path, out) == 0
    assert (out / "metrics.json").is_file()
    assert _run(bundle, no_object, out) == 0
    assert not (out / "metrics.json").exists()
    printed = capsys.readouterr().out
    assert "removed" in printed and "no objectGuess" in printed
    assert "21 scan patterns in 21 groups of 4 (84 patches predicted" in printed
    assert json.loads((out / "timing.json").read_text())["n_scan_patterns"] == 21
