"""Targets and the Markdown report from a hand-made results dictionary."""
import pytest

from benchmarks.report import evaluate_targets, render_markdown


def _results(amp_hi=0.97, phase_hi=0.98, tti=0.5, with_100k=False):
    def backend(amp, phase, pps, tti, gflops):
        return {"train": {"patterns_per_s": pps, "gflops": gflops, "epoch_s": 2.0,
                          "peak_rss_mb": 900.0},
                "inference": {"time_to_image_s": tti, "patterns_per_s": 100.0,
                              "quality": {"amp_ssim": amp, "phase_ssim": phase}}}

    rows = [{"M": 1000, "time_to_image_s": 5.0, "patterns_per_s": 200.0, "peak_rss_mb": 700.0},
            {"M": 10000, "time_to_image_s": 50.0, "patterns_per_s": 200.0,
             "peak_rss_mb": 1000.0}]
    if with_100k:
        rows.append({"M": 100000, "time_to_image_s": 500.0, "patterns_per_s": 200.0,
                     "peak_rss_mb": 5000.0})
    return {
        "meta": {"date": "today", "quick": False, "threads": 2, "wall_s": 10.0,
                 "backends": ["tensorflow", "pytorch"], "notes": ["a note"],
                 "machine": {"cpu": "cpu", "cores": 2, "memory_gb": 24.0},
                 "versions": {"python": "3.11", "ptychi": "2.2.0"},
                 "sizes": {"n_train": 192, "n_test": 192, "epochs": 5, "batch_size": 16,
                           "validation_fraction": 0.125, "ptychi_iterations": [50, 100, 200],
                           "scaling_sizes": [1000, 10000]}},
        "flops": {"network": {"1": {"forward_gflops_per_pattern": 1.45,
                                    "train_gflops_per_pattern": 4.35}},
                  "tensorflow": {"best_gflops": 100.0}, "pytorch": {"best_gflops": 50.0}},
        "ptychi": {"lines-hi": {"runs": {"rpie": {"100": {"total_s": 20.0, "amp_ssim": 0.99}}}},
                   "lines-lo": {"runs": {"rpie": {"200": {"total_s": 40.0, "amp_ssim": 0.80},
                                                  "100": {"total_s": 20.0, "amp_ssim": 0.7}},
                                         "lsqml": {"200": {"total_s": 30.0,
                                                           "amp_ssim": 0.85}}}}},
        "scenarios": {
            "lines-hi-g1": {"scenario": {"obj": "lines", "dose": "hi", "gridsize": 1},
                            "backends": {"tensorflow": backend(amp_hi, phase_hi, 30.0, tti, 45.0),
                                         "pytorch": backend(amp_hi, phase_hi, 25.0, tti, 15.0)}},
            "lines-lo-g1": {"scenario": {"obj": "lines", "dose": "lo", "gridsize": 1},
                            "backends": {"tensorflow": backend(0.86, 0.97, 30.0, tti, 45.0),
                                         "pytorch": backend(0.84, 0.97, 25.0, tti, 15.0)}}},
        "scaling": {"backends": {"pytorch": {
            "rows": rows, "measured_100k": with_100k,
            "memory_fit": {"slope_mb_per_1k": 33.3, "rss_at_100k_mb": 4000.0}}}},
    }


def _status(rows, target, backend):
    return next(r["status"] for r in rows if r["target"] == target and r["backend"] == backend)


def test_targets_met_missed_and_not_measured():
    rows = evaluate_targets(_results(), ["tensorflow", "pytorch"])
    assert _status(rows, "high_dose_quality", "tensorflow") == "MET"
    # low dose: TF amp 0.86 > best Pty-chi 0.85; torch 0.84 is not
    assert _status(rows, "low_dose_quality", "tensorflow") == "MET"
    assert _status(rows, "low_dose_quality", "pytorch") == "MISSED"
    assert _status(rows, "time_to_image", "pytorch") == "MET"      # 0.5 / 20 = 0.025
    assert _status(rows, "training_flops", "tensorflow") == "MET"  # 45 / 100
    assert _status(rows, "training_flops", "pytorch") == "MISSED"  # 15 / 50
    assert _status(rows, "memory_100k", "pytorch") == "NOT MEASURED"
    assert _status(rows, "memory_100k", "tensorflow") == "NOT MEASURED"
    assert _status(rows, "backend_parity", "tensorflow vs pytorch") == "MET"  # 30/25 = 1.2


def test_targets_missed_when_thresholds_fail():
    rows = evaluate_targets(_results(amp_hi=0.94, tti=1.5, with_100k=True),
                            ["tensorflow", "pytorch"])
    assert _status(rows, "high_dose_quality", "pytorch") == "MISSED"
    assert _status(rows, "time_to_image", "tensorflow") == "MISSED"  # 1.5 / 20 > 0.05
    assert _status(rows, "memory_100k", "pytorch") == "MISSED"       # 5000 MB measured


def test_missing_backend_result_is_not_measured():
    res = _results()
    res["scenarios"]["lines-hi-g1"]["backends"]["pytorch"] = {"error": "boom"}
    rows = evaluate_targets(res, ["tensorflow", "pytorch"])
    assert _status(rows, "high_dose_quality", "pytorch") == "NOT MEASURED"
    assert _status(rows, "backend_parity", "tensorflow vs pytorch") == "NOT MEASURED"


def test_markdown_has_every_section_and_status():
    res = _results()
    res["targets"] = evaluate_targets(res, ["tensorflow", "pytorch"])
    md = render_markdown(res)
    for heading in ("# Benchmarks", "## Targets", "## Quality and speed per scenario",
                    "## Pty-chi reference", "## Convolution FLOP rate", "## Inference scaling"):
        assert heading in md
    assert "**MET**" in md and "**MISSED**" in md and "**NOT MEASURED**" in md
    assert "> a note" in md
    assert "does NOT stay bounded" in md and "extrapolation, not a measurement" in md
    assert "| lines-lo-g1 | pytorch | 0.840 |" in md
    with pytest.raises(KeyError):
        render_markdown({})


def test_scaling_from_a_separate_run_replaces_that_backend_and_is_noted(tmp_path):
    import json

    from benchmarks.run import _merge_scaling

    def curve(sizes, rss):
        rows = [{"M": m, "time_to_image_s": m / 100.0, "patterns_per_s": 100.0,
                 "peak_rss_mb": r} for m, r in zip(sizes, rss)]
        return {"rows": rows, "memory_fit": {"slope_mb_per_1k": 0.5},
                "measured_100k": 100000 in sizes}

    results = {"meta": {"notes": []},
               "scaling": {"sizes": [1000, 10000],
                           "backends": {"tensorflow": curve([1000, 10000], [900, 1300]),
                                        "pytorch": curve([1000, 10000], [500, 520])}}}
    other = tmp_path / "scaling_pytorch.json"
    other.write_text(json.dumps({"sizes": [1000, 100000],
                                 "backends": {"pytorch": curve([1000, 100000], [560, 660])}}))
    _merge_scaling(results, other, tmp_path)
    sc = results["scaling"]
    assert sc["sizes"] == [1000, 10000, 100000]
    assert sc["backends"]["pytorch"]["measured_100k"] is True
    assert [r["M"] for r in sc["backends"]["tensorflow"]["rows"]] == [1000, 10000]
    assert "scaling_pytorch.json" in results["meta"]["notes"][-1]
    results["meta"]["notes"].append("a later note")
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    assert json.loads((tmp_path / "scaling.json").read_text())["sizes"] == [1000, 10000, 100000]
    _merge_scaling(results, other, tmp_path)
    assert sum("scaling_pytorch.json" in n for n in results["meta"]["notes"]) == 1, \
        "merging the same curve twice must not repeat its note"
    assert results["meta"]["notes"][-1] == "a later note", "the note keeps its place"
