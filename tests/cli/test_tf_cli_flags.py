"""Each flag of the TensorFlow train/inference CLIs reaches the code that uses it.

One real (tiny, one-epoch) training run with many flags and a --config file is spied on at the
points where the flags are consumed (model factory, training loop, stitcher); inference runs are
checked the same way. Also: bundles without an intensity scale or from another backend are
refused, and --N defaults to the data's pattern size.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from ptycho import inference, simulate, train  # noqa: E402
from ptycho.physics import intensity_scale  # noqa: E402

SPY: dict = {}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("tf_flags_data")
    assert simulate.main(["--output", str(d), "--N", "32", "--n-patterns", "40", "--split",
                          "region", "--nphotons", "1e6", "--seed", "2", "--no-preview"]) == 0
    return d / "train.npz", d / "test.npz"


@pytest.fixture(scope="module")
def trained(scan, tmp_path_factory):
    import ptycho.model
    import ptycho.tf_training

    train_file, test_file = scan
    out = tmp_path_factory.mktemp("tf_flags_train")
    cfg = out / "run.yaml"
    cfg.write_text("training:\n  max_epochs: 7\n  learning_rate: 0.0005\n"
                   "  lr_reduce_patience: 9\nmodel:\n  amp_activation: softplus\n")
    real_fit, real_build = ptycho.tf_training.fit, ptycho.model.build_model

    def fit_spy(model, tr, va, **kw):
        SPY["fit"] = dict(kw, n_train=len(tr), n_val=None if va is None else len(va),
                          model=model)
        return real_fit(model, tr, va, **kw)

    def build_spy(config, probe, s, f, **kw):
        SPY["build"] = dict(config=config, intensity_scale=s, normalization_factor=f, **kw)
        return real_build(config, probe, s, f, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ptycho.tf_training, "fit", fit_spy)
        mp.setattr(ptycho.model, "build_model", build_spy)
        rc = train.main(["--train_data_file", str(train_file), "--test_data_file", str(test_file),
                         "--output-dir", str(out / "run"), "--n_groups", "10", "--gridsize", "2",
                         "--nepochs", "1", "--batch-size", "4", "--nphotons", "4e6",
                         "--seed", "3", "--config", str(cfg), "--log-patch-stats",
                         "--patch-stats-limit", "1", "--jit-compile", "--K", "7",
                         "--decoder", "unet", "--filter_scale", "0.5", "--per-pattern",
                         "--projection-steps", "2"])
    assert rc == 0
    return out / "run", dict(SPY)


def test_training_flags_reach_their_destination(trained):
    out, spy = trained
    fit, build = spy["fit"], spy["build"]
    assert fit["epochs"] == 1                      # --nepochs beats the file's max_epochs: 7
    assert fit["learning_rate"] == 0.0005          # from --config
    assert fit["callback_kwargs"]["reduce_lr"]["patience"] == 9
    assert fit["batch_size"] == 4 and fit["seed"] == 3 and fit["jit_compile"] is True
    assert fit["n_train"] == 10                    # --n_groups; XLA batches 4, 4, 2
    assert fit["n_val"] == 40                      # --test_data_file: all its patterns seed groups
    assert fit["patch_logger"].limit == 1
    cfg = build["config"]
    assert cfg.N == 32 and cfg.gridsize == 2 and cfg.amp_activation == "softplus"
    assert cfg.decoder == "unet" and cfg.filter_scale == 0.5
    model = fit["model"]
    assert model.decoder == "unet" and model.mid_conv0.kernel.shape == (3, 3, 128, 256)
    assert cfg.projection_steps == 2 and model.projection_steps == 2
    assert cfg.per_pattern and model.per_pattern and model.enc0_conv0.kernel.shape == (3, 3, 1, 64)
    assert build["intensity_scale"] == pytest.approx(intensity_scale(4e6, 32))   # --nphotons
    manifest = json.loads((out / "model/manifest.json").read_text())
    mc = manifest["config"]
    assert mc["data"]["K"] == 7 and mc["data"]["seed"] == 3 and mc["execution"]["seed"] == 3
    assert mc["execution"]["jit_compile"] is True
    assert mc["data"]["test_data_file"].endswith("test.npz")
    n_override = [o for o in manifest["overrides"] if o["key"] == "model.N"]
    assert n_override and n_override[-1]["source"] == "data" and n_override[-1]["new"] == 32
    entries = json.loads((out / "tf_patch_stats.json").read_text())
    assert sorted(e["phase"] for e in entries) == ["train", "val"]   # limit 1 per phase
    assert manifest["mean_photons"] == pytest.approx(4e6)
    history = json.loads((out / "history.json").read_text())
    assert np.isfinite(history["train_loss"][0]) and np.isfinite(history["val_nll_full"][0])


def test_inference_flags_reach_their_destination(trained, scan, tmp_path):
    import ptycho.stitch

    out, _ = trained
    calls = []
    real_add = ptycho.stitch.Stitcher.add

    def add_spy(self, patches, positions):
        calls.append((len(patches), self.crop))
        return real_add(self, patches, positions)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ptycho.stitch.Stitcher, "add", add_spy)
        rc = inference.main(["--model_path", str(out / "model"), "--test_data", str(scan[1]),
                             "--output-dir", str(tmp_path), "--batch_size", "4",
                             "--n_groups", "10", "--stitch_crop", "20", "--log-patch-stats",
                             "--patch-stats-limit", "2", "--no-jit-compile"])
    assert rc == 0
    # 10 groups in batches of 4: 4 + 4 + 2 groups of 4 patterns, crop 20 each time
    assert calls == [(16, 20), (16, 20), (8, 20)]
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["n_groups"] == 10 and timing["batch_size"] == 4
    assert timing["jit_compile"] is False
    entries = json.loads((tmp_path / "tf_patch_stats.json").read_text())
    assert [e["batch_idx"] for e in entries] == [0, 1]
    with np.load(tmp_path / "reconstruction.npz", allow_pickle=False) as z:
        assert int(z["stitch_crop"]) == 20


def test_bundle_without_intensity_scale_is_refused(trained, scan, tmp_path, capsys):
    out, _ = trained
    bad = tmp_path / "bundle"
    shutil.copytree(out / "model", bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    del manifest["intensity_scale"]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    rc = inference.main(["--model_path", str(bad), "--test_data", str(scan[1]),
                         "--output_dir", str(tmp_path / "inf")])
    assert rc == 2
    assert "intensity_scale" in capsys.readouterr().err
    assert not (tmp_path / "inf" / "reconstruction.npz").exists()
    manifest["intensity_scale"] = 1.0
    manifest["backend"] = "torch"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    rc = inference.main(["--model_path", str(bad), "--test_data", str(scan[1]),
                         "--output_dir", str(tmp_path / "inf")])
    assert rc == 2 and "ptycho_torch.inference" in capsys.readouterr().err


def test_bad_training_input_is_refused(scan, tmp_path, capsys):
    rc = train.main(["--train_data_file", str(scan[0]), "--output_dir", str(tmp_path),
                     "--N", "64"])
    assert rc == 2 and "model.N" in capsys.readouterr().err
    rc = train.main(["--output_dir", str(tmp_path)])
    assert rc == 2 and "train_data_file" in capsys.readouterr().err
    rc = train.main(["--train_data_file", str(tmp_path / "missing.npz")])
    assert rc == 2 and "missing.npz" in capsys.readouterr().err


def test_help_lists_the_flags(capsys):
    for mod, flags in ((train, ("--train_data_file", "--test_data_file", "--n_groups",
                                "--gridsize", "--max_epochs", "--nepochs", "--batch_size",
                                "--learning_rate", "--N", "--nphotons", "--seed", "--config",
                                "--log-patch-stats", "--patch-stats-limit", "--jit-compile",
                                "--no-jit-compile")),
                       (inference, ("--model_path", "--test_data", "--output_dir",
                                    "--batch_size", "--log-patch-stats", "--patch-stats-limit",
                                    "--n_groups", "--stitch_crop"))):
        with pytest.raises(SystemExit) as exc:
            mod.main(["--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for flag in flags:
            assert flag in text, (mod.__name__, flag)


def test_cosine_schedule_flags_drive_the_learning_rate(scan, tmp_path):
    from ptycho.lr_schedule import cosine_learning_rate

    train_file, test_file = scan
    out = tmp_path / "cos"
    assert train.main(["--train_data_file", str(train_file), "--test_data_file", str(test_file),
                       "--output_dir", str(out), "--n_groups", "12", "--N", "32",
                       "--max_epochs", "2", "--batch_size", "4", "--learning_rate", "1e-3",
                       "--min_learning_rate", "1e-5", "--lr-schedule", "cosine",
                       "--lr_warmup_fraction", "0"]) == 0
    lr = json.loads((out / "history.json").read_text())["lr"]
    # 12 groups in batches of 4: 3 steps per epoch; the history holds each epoch's last step
    assert lr == pytest.approx([cosine_learning_rate(s, 6, 1e-3, 1e-5, 0.0) for s in (2, 5)],
                               rel=1e-6)
