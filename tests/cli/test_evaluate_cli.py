"""``ptycho-evaluate`` (``python -m ptycho.evaluate``), run in-process through ``main(argv)``.

Synthetic data only: a band-limited object, a data NPZ holding it as ``objectGuess``, and
"reconstructions" that are shifted / phase-offset / scaled copies written with the keys of the
inference CLIs.
"""

import csv
import json
import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from ptycho.atomic import atomic_save_npz
from ptycho.data.contract import save_npz, validate_arrays
from ptycho.evaluate import (EvaluationError, build_parser, evaluate_files, largest_rectangle,
                             load_object_file, main, write_outputs)
from ptycho.metrics import frc_threshold
from ptycho.objects import make_object
from ptycho.physics import extract_patches, translate
from ptycho.stitch import stitch_patches

N = 16
SHIFT = (1.3, -0.7)          # content of the reconstruction moved by this much (dy, dx)
PHASE, SCALE = 0.9, 0.6      # and multiplied by SCALE * exp(i PHASE)
ORIGIN, SIDE = (8, 8), 80    # reconstruction canvas: object rows/cols 8 .. 87


@pytest.fixture(scope="module")
def truth():
    return make_object("grf", (96, 96), np.random.default_rng(0),
                       correlation_length=2.0).astype(np.complex128)


def _positions():
    ys, xs = np.meshgrid(np.arange(24.0, 73.0, 8.0), np.arange(24.0, 73.0, 8.0), indexing="ij")
    return ys.ravel(), xs.ravel()


def _data_file(path, obj):
    y, x = _positions()
    data = validate_arrays({"diff3d": np.ones((y.size, N, N), np.float32), "xcoords": x,
                            "ycoords": y, "probeGuess": np.ones((N, N), np.complex64),
                            "objectGuess": obj.astype(np.complex64)}, str(path))
    save_npz(path, data)
    return path


def _mask():
    m = np.zeros((SIDE, SIDE), dtype=bool)
    m[10:64, 10:60] = True
    return m


def _distorted(truth, shift=SHIFT, phase=PHASE, scale=SCALE, ramp=(0.0, 0.0)):
    moved = translate(truth[None], np.asarray([shift]), "fourier")[0]
    yy, xx = np.indices(truth.shape)
    out = moved * scale * np.exp(1j * (phase + ramp[0] * yy + ramp[1] * xx))
    return out[ORIGIN[0]:ORIGIN[0] + SIDE, ORIGIN[1]:ORIGIN[1] + SIDE]


def _recon_file(path, obj, mask=None, origin=ORIGIN, **extra):
    """A reconstruction with the keys the inference CLIs write (zero outside the mask)."""
    arrays = {"object": np.where(mask, obj, 0).astype(np.complex64) if mask is not None
              else obj.astype(np.complex64)}
    if mask is not None:
        arrays["scanned_mask"] = mask
    if origin is not None:
        H, W = obj.shape
        arrays.update(origin=np.asarray(origin, np.int64),
                      canvas_y=origin[0] + np.arange(H, dtype=np.float64),
                      canvas_x=origin[1] + np.arange(W, dtype=np.float64))
    arrays.update(extra)
    atomic_save_npz(path, arrays)
    return path


@pytest.fixture(scope="module")
def files(truth, tmp_path_factory):
    d = tmp_path_factory.mktemp("evaluate")
    return {"dir": d, "data": _data_file(d / "test.npz", truth),
            "recon": _recon_file(d / "recon.npz", _distorted(truth), _mask())}


@pytest.fixture(scope="module")
def aligned_run(files):
    """One full CLI run (dashed flags) against the data file."""
    out = files["dir"] / "aligned"
    rc = main([str(files["recon"]), "--reference", str(files["data"]), "--output-dir", str(out)])
    assert rc == 0
    return out


def _json(out):
    return json.loads((out / "metrics.json").read_text())


def test_aligned_copy_is_near_perfect(aligned_run):
    res = _json(aligned_run)
    m, a = res["metrics"], res["alignment"]
    assert m["amp_mae"] < 2e-3 and m["phase_mae"] < 5e-3
    assert m["amp_ssim"] > 0.999 and m["phase_ssim"] > 0.999
    assert m["amp_psnr"] > 45 and m["phase_psnr"] > 45
    for p in ("amp", "phase"):
        assert m[f"{p}_frc50"] == pytest.approx(0.5) and m[f"{p}_frc17"] == pytest.approx(0.5)
    # the shift that moves the reconstruction back onto the truth
    assert (a["shift_dy"], a["shift_dx"]) == pytest.approx((-SHIFT[0], -SHIFT[1]), abs=0.03)
    assert math.remainder(a["phase_offset"] + PHASE, 2 * math.pi) == pytest.approx(0, abs=2e-3)
    assert a["amplitude_scale"] == pytest.approx(1 / SCALE, rel=2e-3)
    assert a["phase_ramp_a"] is None
    reg = res["region"]
    assert (reg["row0"], reg["row1"], reg["col0"], reg["col1"]) == (10, 64, 10, 60)
    assert reg["reference_offset"] == list(ORIGIN) and reg["placement"] == "origin"
    assert res["reference"]["kind"] == "data" and res["reconstruction"]["key"] == "object"


def test_without_alignment_metrics_are_worse(files, aligned_run, capsys, tmp_path):
    out = tmp_path / "raw"
    assert main([str(files["recon"]), "--reference", str(files["data"]), "--output_dir",
                 str(out), "--no_align"]) == 0
    table = capsys.readouterr().out
    assert "amplitude" in table and "phase" in table and "PSNR" in table and "FRC" in table
    raw, good = _json(out), _json(aligned_run)
    assert raw["alignment"]["shift_dy"] is None and raw["alignment"]["amplitude_scale"] == 1.0
    assert raw["metrics"]["amp_mae"] > 0.1 and raw["metrics"]["phase_mae"] > 0.5
    for key in ("amp_mae", "phase_mae"):
        assert raw["metrics"][key] > 50 * good["metrics"][key]
    for key in ("amp_ssim", "phase_ssim", "amp_frc50", "phase_frc50", "amp_psnr"):
        assert raw["metrics"][key] < good["metrics"][key] - 0.05
    # without the shift step the phase offset and scale are still removed, but the shift remains
    ns = evaluate_files(files["recon"], files["data"], shift=False)
    assert ns.alignment["shift_dy"] is None
    assert good["metrics"]["phase_mae"] < ns.metrics["phase_mae"] < raw["metrics"]["phase_mae"]


def test_pngs_decode_and_show_content(aligned_run):
    for name in ("comparison.png", "frc.png"):
        img = mpimg.imread(aligned_run / name)
        assert img.ndim == 3 and min(img.shape[:2]) > 300
        rgb = np.round(img[..., :3] * 255).astype(np.int64)
        assert rgb.std() > 10
        assert np.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]).size > 50
    assert sorted(p.name for p in aligned_run.iterdir()) == [
        "comparison.png", "frc.png", "metrics.csv", "metrics.json"]      # no temporary files


def test_csv_and_json_agree(aligned_run):
    res = _json(aligned_run)
    with open(aligned_run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    row = rows[0]
    merged = {**res["metrics"], **res["alignment"],
              **{k: res["region"][k] for k in ("n_pixels", "row0", "row1", "col0", "col1")}}
    assert set(merged) <= set(row)
    for key, value in merged.items():
        if value is None:
            assert row[key] == ""
        else:
            assert float(row[key]) == pytest.approx(float(value), rel=1e-12), key
    assert row["reconstruction"] == res["reconstruction"]["path"]
    assert row["reference"] == res["reference"]["path"]


def test_images_and_curves_reproduce_the_metrics(files):
    ev = evaluate_files(files["recon"], files["data"], phase_ramp=True)
    m, im = ev.images["mask"], ev.images
    assert ev.metrics["amp_mae"] == pytest.approx(np.mean(np.abs(im["rec_amp"] - im["ref_amp"])[m]),
                                                  rel=1e-9)
    assert ev.metrics["phase_mae"] == pytest.approx(
        np.mean(np.abs(im["rec_phase"] - im["ref_phase"])[m]), rel=1e-9)
    for p in ("amp", "phase"):
        assert frc_threshold(*ev.frc[p], 0.5) == pytest.approx(ev.metrics[f"{p}_frc50"])


def test_both_flag_spellings(files, tmp_path):
    common = [str(files["recon"]), "--reference", str(files["data"])]
    dashed = build_parser().parse_args(common + [
        "--output-dir", "o", "--no-align", "--no-shift", "--phase-ramp", "--crop-to-scan",
        "--patch-size", "12", "--max-shift", "3.5"])
    under = build_parser().parse_args(common + [
        "--output_dir", "o", "--no_align", "--no_shift", "--phase_ramp", "--crop_to_scan",
        "--patch_size", "12", "--max_shift", "3.5"])
    assert vars(dashed) == vars(under)
    assert (dashed.align, dashed.shift, dashed.phase_ramp, dashed.crop_to_scan,
            dashed.patch_size, dashed.max_shift) == (False, False, True, True, 12, 3.5)
    defaults = build_parser().parse_args(common + ["--output_dir", "o"])
    assert (defaults.align, defaults.shift, defaults.phase_ramp, defaults.crop_to_scan,
            defaults.patch_size, defaults.max_shift) == (True, True, False, False, None, 3.0)
    # the underscore spellings reach the computation (the dashed ones: aligned_run and others)
    out = tmp_path / "u"
    assert main(common + ["--output_dir", str(out), "--phase_ramp", "--crop_to_scan",
                          "--max_shift", "4", "--no_shift"]) == 0
    res = _json(out)
    assert res["options"] == {"align": True, "shift": False, "phase_ramp": True,
                              "crop_to_scan": True, "patch_size": None, "max_shift": 4.0}
    assert res["alignment"]["phase_ramp_dy"] is not None and res["alignment"]["shift_dy"] is None


def test_help_lists_defaults_and_units(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--output-dir", "--output_dir", "--no-align", "--no_align", "--phase-ramp",
                 "--crop-to-scan", "--patch-size", "--max-shift", "--reference"):
        assert flag in text
    assert "default: 3" in text and "pixels" in text and "default: off" in text
    assert "stitch_crop" in text


def test_phase_ramp_is_removed_only_when_asked(truth, tmp_path):
    ramped = _recon_file(tmp_path / "ramp.npz", _distorted(truth, ramp=(0.02, -0.015)), _mask())
    data = _data_file(tmp_path / "d.npz", truth)
    plain = evaluate_files(ramped, data)
    fitted = evaluate_files(ramped, data, phase_ramp=True)
    assert plain.metrics["phase_mae"] > 0.1
    assert fitted.metrics["phase_mae"] < 5e-3
    assert (fitted.alignment["phase_ramp_dy"], fitted.alignment["phase_ramp_dx"]) == \
        pytest.approx((-0.02, 0.015), abs=1e-3)


def test_crop_to_scan_uses_the_largest_inside_rectangle(truth, tmp_path):
    m = np.zeros((SIDE, SIDE), dtype=bool)
    m[10:40, 10:70] = True      # an L-shaped scanned region
    m[40:70, 10:30] = True
    recon = _recon_file(tmp_path / "l.npz", _distorted(truth), m)
    data = _data_file(tmp_path / "d.npz", truth)
    box = evaluate_files(recon, data)
    rect = evaluate_files(recon, data, crop_to_scan=True)
    assert (box.region["row0"], box.region["row1"], box.region["col0"], box.region["col1"]) == \
        (10, 70, 10, 70)
    assert box.region["n_pixels"] == int(m.sum())
    assert (rect.region["row0"], rect.region["row1"], rect.region["col0"], rect.region["col1"]) \
        == (10, 40, 10, 70)
    assert rect.region["n_pixels"] == 30 * 60 and rect.images["mask"].all()
    # the bounding box holds unscanned (zero) pixels, which only hurt SSIM
    assert rect.metrics["amp_ssim"] > 0.999 > box.metrics["amp_ssim"]


def test_largest_rectangle_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = rng.random((7, 9)) < 0.7
        if not m.any():
            continue
        best = max((r1 - r0) * (c1 - c0)
                   for r0 in range(7) for r1 in range(r0 + 1, 8)
                   for c0 in range(9) for c1 in range(c0 + 1, 10) if m[r0:r1, c0:c1].all())
        r0, r1, c0, c1 = largest_rectangle(m)
        assert m[r0:r1, c0:c1].all() and (r1 - r0) * (c1 - c0) == best
    with pytest.raises(ValueError, match="at least one True"):
        largest_rectangle(np.zeros((3, 3), bool))


def test_reconstruction_compared_with_reconstruction(truth, files, tmp_path):
    # the same distorted image on a canvas with another origin, stored as amplitude + phase
    other = _distorted(truth)
    H = SIDE - 10
    ref = tmp_path / "ref.npz"
    atomic_save_npz(ref, {"amplitude": np.abs(other[5:5 + H, 5:5 + H]).astype(np.float32),
                          "phase": np.angle(other[5:5 + H, 5:5 + H]).astype(np.float32),
                          "scanned_mask": np.ones((H, H), bool),
                          "origin": np.asarray([ORIGIN[0] + 5, ORIGIN[1] + 5])})
    ev = evaluate_files(files["recon"], ref)
    assert ev.reference.kind == "reconstruction" and ev.reference.key == "amplitude+phase"
    assert ev.region["reference_offset"] == [-5, -5]
    assert ev.metrics["amp_mae"] < 1e-5 and ev.metrics["phase_mae"] < 1e-4
    assert abs(ev.alignment["shift_dy"]) < 0.01 and abs(ev.alignment["shift_dx"]) < 0.01
    assert ev.alignment["amplitude_scale"] == pytest.approx(1.0, abs=1e-5)
    # identical images: PSNR inf, written as "inf" in both files
    same = evaluate_files(files["recon"], files["recon"], align=False)
    assert same.metrics["amp_psnr"] == math.inf and same.reference.kind == "reconstruction"
    paths = write_outputs(same, tmp_path / "same")
    assert json.loads(paths["json"].read_text())["metrics"]["amp_psnr"] == "inf"
    with open(paths["csv"], newline="") as fh:
        assert next(csv.DictReader(fh))["amp_psnr"] == "inf"


def test_partial_overlap_with_the_reference_is_warned_about(truth, files, tmp_path):
    ref = tmp_path / "top.npz"
    atomic_save_npz(ref, {"object": truth[:48].astype(np.complex64),
                          "origin": np.asarray([0, 0])})
    ev = evaluate_files(files["recon"], ref)
    coverage = [w for w in ev.warnings if "lies on the 48x96 reference" in w]
    assert len(coverage) == 1 and "only 56% of the scanned region" in coverage[0]
    assert not any("lies on the" in w for w in evaluate_files(files["recon"],
                                                               files["data"]).warnings)


def test_scanned_region_from_positions(truth, tmp_path):
    rec = _distorted(truth)
    data = _data_file(tmp_path / "d.npz", truth)
    y, x = _positions()
    # canvas positions + stitch_crop in the reconstruction file
    with_pos = _recon_file(tmp_path / "p.npz", rec, None,
                           scan_positions=np.stack([y, x], 1) - np.asarray(ORIGIN, float),
                           stitch_crop=np.int64(8))
    ev = evaluate_files(with_pos, data)
    lo, hi = 24 - ORIGIN[0] - 4, 72 - ORIGIN[0] + 4
    assert (ev.region["row0"], ev.region["row1"], ev.region["col0"], ev.region["col1"]) == \
        (lo, hi, lo, hi)
    assert "scan positions ± 8/2" in ev.region["mask_source"]
    # nothing in the reconstruction: the data file's positions ± N/2, moved by the origin
    bare = _recon_file(tmp_path / "b.npz", rec, None)
    ev = evaluate_files(bare, data)
    lo, hi = 24 - ORIGIN[0] - N // 2, 72 - ORIGIN[0] + N // 2
    assert (ev.region["row0"], ev.region["row1"]) == (lo, hi)
    assert str(data) in ev.region["mask_source"]
    assert ev.metrics["amp_mae"] < 2e-3


def test_reconstruction_without_origin_is_located(truth, tmp_path):
    data = _data_file(tmp_path / "d.npz", truth)
    plain = _recon_file(tmp_path / "n.npz", _distorted(truth), _mask(), origin=None)
    ev = evaluate_files(plain, data)
    # content at pixel (r, c) is truth(r + 8 - 1.3, c + 8 + 0.7): nearest integer offset (7, 9),
    # and the remaining sub-pixel shift is -0.3 px on both axes
    assert ev.region["reference_offset"] == [7, 9]
    assert ev.region["placement"].startswith("cross-correlation")
    assert (ev.alignment["shift_dy"], ev.alignment["shift_dx"]) == pytest.approx((-0.3, -0.3),
                                                                                 abs=0.03)
    assert ev.metrics["amp_mae"] < 2e-3 and ev.metrics["phase_mae"] < 5e-3


def test_stitched_patches_evaluate_against_their_object(truth, tmp_path):
    """End to end with the library's own stitcher and origin convention (bounding-box canvas)."""
    y, x = _positions()
    pos = np.stack([y + 0.25, x - 0.5], axis=1)
    patches = extract_patches(truth.astype(np.complex64), pos, N, interpolation="fourier")
    res = stitch_patches(patches, pos, crop=N // 2, interpolation="fourier")
    assert res.origin != (0, 0)
    H, W = res.obj.shape
    recon = tmp_path / "reconstruction.npz"
    atomic_save_npz(recon, {"object": res.obj * np.exp(-0.4j), "scanned_mask": res.scanned_mask,
                            "origin": np.asarray(res.origin),
                            "canvas_y": res.origin[0] + np.arange(H, dtype=float),
                            "canvas_x": res.origin[1] + np.arange(W, dtype=float),
                            "stitch_crop": np.int64(N // 2)})
    ev = evaluate_files(tmp_path, _data_file(tmp_path / "d.npz", truth))   # a directory works
    assert ev.region["reference_offset"] == list(res.origin)
    assert abs(ev.alignment["shift_dy"]) < 0.05 and abs(ev.alignment["shift_dx"]) < 0.05
    assert ev.metrics["amp_ssim"] > 0.99 and ev.metrics["phase_ssim"] > 0.99


def _error(capsys, argv):
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_inputs_give_clear_errors(truth, files, tmp_path, capsys):
    out = ["--output-dir", str(tmp_path / "o")]
    ref = ["--reference", str(files["data"])]
    empty = tmp_path / "empty.npz"
    atomic_save_npz(empty, {"foo": np.zeros(3)})
    err = _error(capsys, [str(empty), *ref, *out])
    assert str(empty) in err and "'object'" in err and "'objectGuess'" in err and "foo" in err
    half = tmp_path / "half.npz"
    atomic_save_npz(half, {"amplitude": np.ones((8, 8), np.float32)})
    err = _error(capsys, [str(half), *ref, *out])
    assert str(half) in err and "key 'phase'" in err
    bad = _distorted(truth).astype(np.complex64)
    bad[3, 4] = np.nan
    nan = _recon_file(tmp_path / "nan.npz", bad, None)
    err = _error(capsys, [str(nan), *ref, *out])
    assert str(nan) in err and "key 'object'" in err and "non-finite" in err and "(3, 4)" in err
    big = _recon_file(tmp_path / "big.npz", np.ones((120, 100), np.complex64), None, origin=None)
    err = _error(capsys, [str(big), *ref, *out])
    assert "shape mismatch" in err and "120x100" in err and "96x96" in err
    err = _error(capsys, [str(tmp_path / "missing.npz"), *ref, *out])
    assert "missing.npz" in err and "does not exist" in err
    err = _error(capsys, [str(files["recon"]), *out])
    assert "--reference" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(EvaluationError, match=r"key 'scanned_mask'.*\(80, 80\)"):
        load_object_file(_recon_file(tmp_path / "m.npz", _distorted(truth), None,
                                     scanned_mask=np.ones((5, 5), bool)))
    with pytest.raises(EvaluationError, match="no object image.*holds keys"):
        evaluate_files(files["recon"], empty)
    with pytest.raises(EvaluationError, match="'origin' says"):
        load_object_file(_recon_file(tmp_path / "o.npz", _distorted(truth), None,
                                     origin=(1, 2), canvas_x=np.arange(SIDE, dtype=float)))
    away = _recon_file(tmp_path / "away.npz", _distorted(truth), _mask(), origin=(500, 500))
    with pytest.raises(EvaluationError, match="do not overlap"):
        evaluate_files(away, files["data"])


def test_shift_search_range(truth, files, tmp_path, capsys):
    far = _recon_file(tmp_path / "far.npz", _distorted(truth, shift=(6.0, -2.5)), _mask())
    found = evaluate_files(far, files["data"], max_shift=8.0)
    assert (found.alignment["shift_dy"], found.alignment["shift_dx"]) == \
        pytest.approx((-6.0, 2.5), abs=0.03)
    assert found.warnings == [] and found.metrics["amp_mae"] < 2e-3
    assert found.alignment["shift_correlation"] > 0.999
    out = tmp_path / "limited"              # default search range: 3 px
    assert main([str(far), "--reference", str(files["data"]), "--output-dir", str(out)]) == 0
    assert "warning" in capsys.readouterr().err and "--max-shift 3" in _json(out)["warnings"][0]
    limited = _json(out)["alignment"]
    assert max(abs(limited["shift_dy"]), abs(limited["shift_dx"])) <= 3.0
    # a reconstruction unrelated to the reference: the shift is flagged as unreliable
    rng = np.random.default_rng(5)
    noise = _recon_file(tmp_path / "noise.npz", rng.normal(size=(SIDE, SIDE)) + 1j *
                        rng.normal(size=(SIDE, SIDE)), _mask())
    ev = evaluate_files(noise, files["data"])
    assert ev.alignment["shift_correlation"] < 0.3
    assert any("correlates weakly" in w for w in ev.warnings)


def test_other_input_forms(truth, tmp_path):
    y, x = _positions()
    # a bare object file (objectGuess + positions + probe, no diffraction) as the reference
    bare_ref = tmp_path / "gt.npz"
    atomic_save_npz(bare_ref, {"objectGuess": truth.astype(np.complex64), "ycoords": y,
                               "xcoords": x, "probeGuess": np.ones((N, N), np.complex64)})
    rec = _distorted(truth)
    weighted = _recon_file(tmp_path / "w.npz", rec, None,
                           weight=_mask().astype(np.float32) * 2.0)
    ev = evaluate_files(weighted, bare_ref)
    assert ev.reference.kind == "data" and ev.region["mask_source"].startswith("weight")
    assert (ev.region["row0"], ev.region["row1"], ev.region["col0"], ev.region["col1"]) == \
        (10, 64, 10, 60)
    assert ev.metrics["amp_mae"] < 2e-3
    # no --reference: the reconstruction file's own objectGuess is the reference
    both = _recon_file(tmp_path / "both.npz", rec, _mask(),
                       objectGuess=truth.astype(np.complex64))
    ev = evaluate_files(both)
    assert ev.reference.key == "objectGuess" and ev.recon.key == "object"
    assert ev.reference.source == ev.recon.source and ev.metrics["amp_mae"] < 2e-3
