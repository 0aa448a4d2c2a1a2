"""Every flag of the PyTorch CLIs reaches the code that uses it.

One training run with (nearly) every flag set, plus a --config file, is observed from the inside:
the payload built from the flags is the very object the data module and the Lightning module
hold, and each value is checked where it takes effect (Trainer, optimiser, scheduler, callbacks,
model, grouping, loaders, patch statistics, bundle). The inference flags are checked the same way.
"""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
lightning = pytest.importorskip("lightning")

from ptycho import simulate  # noqa: E402
from ptycho.bundle import load_bundle  # noqa: E402

TRAIN_FLAGS = {
    "--max_epochs": "1", "--n_images": "30", "--gridsize": "2", "--K": "5", "--batch_size": "5",
    "--learning_rate": "5e-4", "--N": "32", "--nphotons": "2e6", "--patch-stats-limit": "1",
    "--amp_activation": "swish", "--interpolation": "bilinear", "--group_pad": "8",
    "--decoder": "unet", "--projection_steps": "2",
    "--lr_reduce_patience": "2", "--min_learning_rate": "1e-6",
    "--early_stopping_patience": "4", "--validation_fraction": "0.2", "--mode": "unsupervised",
    "--accelerator": "cpu", "--devices": "1", "--strategy": "auto", "--precision": "64",
    "--num_workers": "0", "--logger": "csv", "--seed": "7",
}
TRAIN_SWITCHES = ["--log-patch-stats", "--no-probe_big", "--probe_mask", "--probe_trainable",
                  "--intensity_scale_trainable", "--deterministic", "--per_pattern"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("flags_data")
    assert simulate.main(["--output", str(d), "--N", "32", "--n-patterns", "36", "--split",
                          "region", "--object", "grf", "--nphotons", "1e6", "--seed", "5",
                          "--no-preview"]) == 0
    return d


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """Run the training CLI once and record what reached each component."""
    from ptycho_torch import data_module, train
    from ptycho_torch.workflows import components

    out = tmp_path_factory.mktemp("flags_run")
    cfg = out / "config.yaml"
    cfg.write_text("training:\n  max_epochs: 5\n  lr_reduce_factor: 0.3\n"
                   "model:\n  amp_activation: softplus\n")
    seen: dict = {"prepare": []}
    mp = pytest.MonkeyPatch()
    mp.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    mp.setenv("PL_GLOBAL_SEED", "0")
    real_build, real_run = components.build_training_payload, components.run_training
    real_seed, real_prepare = lightning.pytorch.seed_everything, data_module.prepare_grouped_arrays

    def build(*a, **k):
        seen["built"] = real_build(*a, **k)
        return seen["built"]

    def run(*a, **k):
        seen["result"] = real_run(*a, **k)
        seen["deterministic"] = torch.are_deterministic_algorithms_enabled()
        return seen["result"]

    def seed(s, *a, **k):
        seen["seed"] = s
        return real_seed(s, *a, **k)

    def prepare(*a, **k):
        seen["prepare"].append(k)
        return real_prepare(*a, **k)

    mp.setattr(components, "build_training_payload", build)
    mp.setattr(components, "run_training", run)
    mp.setattr(lightning.pytorch, "seed_everything", seed)
    mp.setattr(data_module, "prepare_grouped_arrays", prepare)
    argv = ["--train_data_file", str(data / "train.npz"), "--output_dir", str(out / "run"),
            "--config", str(cfg)]
    for flag, value in TRAIN_FLAGS.items():
        argv += [flag, value]
    try:
        assert train.main(argv + TRAIN_SWITCHES) == 0
    finally:
        torch.use_deterministic_algorithms(False)
        mp.undo()
    seen["out"] = out / "run"
    return seen


def test_payload_is_built_once_and_handed_on(trained):
    payload = trained["built"][0]
    result = trained["result"]
    assert result.module.payload is payload
    assert result.trainer.datamodule.payload is payload


def test_config_precedence_cli_over_yaml_over_defaults(trained):
    c = trained["built"][0].config
    assert c.training.max_epochs == 1            # CLI beats YAML (5)
    assert c.training.lr_reduce_factor == 0.3     # YAML beats the default
    assert c.model.amp_activation == "swish"      # CLI beats YAML
    keys = {(o.source, o.key) for o in trained["built"][0].overrides}
    assert ("cli", "training.max_epochs") in keys and ("yaml", "training.max_epochs") in keys


def test_trainer_receives_execution_flags(trained):
    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    trainer = trained["result"].trainer
    assert trainer.max_epochs == 1
    assert isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices == 1
    assert trainer.precision == "64-true"
    assert trained["deterministic"] is True
    assert isinstance(trainer.logger, CSVLogger)
    assert trainer.logger.save_dir == str(trained["out"])
    stop = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
    assert stop.patience == 4
    ckpts = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert [c.dirpath for c in ckpts] == [str(trained["out"] / "checkpoints")] * 2
    assert trained["seed"] == 7


def test_optimizer_and_scheduler_receive_training_flags(trained):
    trainer, module = trained["result"].trainer, trained["result"].module
    opt = trainer.optimizers[0]
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(module.model.log_intensity_scale) in ids and id(module.model.probe) in ids
    sched = trainer.lr_scheduler_configs[0].scheduler
    # --lr_reduce_patience 2 (Keras meaning); torch reduces after more than `patience` epochs
    assert sched.factor == 0.3 and sched.patience == 1 and sched.min_lrs == [1e-6]
    assert opt.param_groups[0]["eps"] == 1e-7


def test_model_receives_model_flags(trained):
    model = trained["result"].module.model
    assert model.N == 32 and model.C == 4 and model.amp_activation == "swish"
    assert not model.probe_big and model.use_probe_mask and model.group_pad == 8
    assert model.decoder == "unet" and hasattr(model, "mid_conv0")
    assert model.projection_steps == 2
    assert model.per_pattern and model.enc0_conv0.in_channels == 1 and model.amp_out.out_channels == 1
    assert model.interpolation == "bilinear"
    assert isinstance(model.log_intensity_scale, torch.nn.Parameter)
    assert isinstance(model.probe, torch.nn.Parameter)
    assert model.enc0_conv0.weight.dtype == torch.float64  # --precision 64
    hp = trained["result"].module.hparams["config"]
    assert hp["model"]["group_pad"] == 8 and hp["training"]["learning_rate"] == 5e-4


def test_data_module_receives_data_flags(trained):
    dm = trained["result"].trainer.datamodule
    (kw,) = trained["prepare"]
    assert kw["n_groups"] == 30 and kw["K"] == 5 and kw["seed"] == 7
    assert len(dm.train_arrays) == 24 and len(dm.val_arrays) == 6   # validation_fraction 0.2
    loader = dm.train_dataloader()
    assert loader.batch_size == 5 and loader.num_workers == 0
    stats = trained["built"][0].stats
    assert stats.mean_photons == 2e6                                   # --nphotons


def test_patch_stats_flags_and_bundle(trained):
    out = trained["out"]
    entries = json.loads((out / "torch_patch_stats.json").read_text())
    assert sorted(e["phase"] for e in entries) == ["train", "val"]      # limit 1 per phase
    bundle = load_bundle(out / "model")
    assert bundle.config == trained["built"][0].config
    assert bundle.manifest["mean_photons"] == 2e6
    cli = {o["key"] for o in bundle.manifest["overrides"] if o["source"] == "cli"}
    assert {"data.n_groups", "model.gridsize", "execution.precision",
            "training.log_patch_stats"} <= cli
    assert (out / "logs").is_dir()                                    # csv logger wrote


def test_test_data_file_flag_feeds_validation(data, tmp_path):
    from ptycho_torch.data_module import PtychoDataModule
    from ptycho_torch.workflows.components import build_training_payload

    payload, train, test = build_training_payload(
        {"train_data_file": str(data / "train.npz"), "test_data_file": str(data / "test.npz"),
         "N": 32, "output_dir": str(tmp_path)})
    assert test is not None and payload.provenance[1][0] == str(data / "test.npz")
    dm = PtychoDataModule(payload, train, test)
    dm.setup()
    assert len(dm.train_arrays) == 36 and len(dm.val_arrays) == 36


def test_inference_flags_reach_their_destinations(trained, data, tmp_path, monkeypatch, capsys):
    from ptycho import inference_core
    from ptycho_torch import inference

    seen: dict = {"prepare": []}
    real_load, real_prepare = inference.load_model, inference_core.prepare_streamed_groups

    def load(*a, **k):
        seen["model"] = real_load(*a, **k)
        return seen["model"]

    def prep(*a, **k):
        seen["prepare"].append(k)
        return real_prepare(*a, **k)

    monkeypatch.setattr(inference, "load_model", load)
    monkeypatch.setattr(inference_core, "prepare_streamed_groups", prep)
    out = tmp_path / "inf"
    rc = inference.main(["--model_path", str(trained["out"]), "--test_data",
                         str(data / "test.npz"), "--output_dir", str(out), "--batch_size", "6",
                         "--accelerator", "cpu", "--log-patch-stats", "--patch-stats-limit", "2",
                         "--n_groups", "10", "--stitch_crop", "12", "--seed", "3",
                         "--precision", "64"])
    assert rc == 0
    timing = json.loads((out / "timing.json").read_text())
    assert timing["batch_size"] == 6 and timing["n_groups"] == 10 and timing["device"] == "cpu"
    (kw,) = seen["prepare"]
    assert kw["n_groups"] == 10 and kw["seed"] == 3 and kw["K"] == 5   # K from the bundle
    assert seen["model"].enc0_conv0.weight.dtype == torch.float64
    with np.load(out / "reconstruction.npz", allow_pickle=False) as z:
        assert int(z["stitch_crop"]) == 12
    entries = json.loads((out / "torch_patch_stats.json").read_text())
    assert [e["batch_idx"] for e in entries] == [0, 1]                 # 10 groups / 6 = 2 batches
    scale = load_bundle(trained["out"] / "model").intensity_scale
    assert f"intensity scale {scale:.6g}" in capsys.readouterr().out


def test_cosine_schedule_flags_drive_the_learning_rate(data, tmp_path):
    from ptycho.lr_schedule import cosine_learning_rate
    from ptycho_torch import train
    from ptycho_torch.workflows import components

    seen = {}
    real_run = components.run_training

    def run(*a, **k):
        seen["result"] = real_run(*a, **k)
        return seen["result"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(components, "run_training", run)
        assert train.main(["--train_data_file", str(data / "train.npz"), "--output_dir",
                           str(tmp_path / "cos"), "--n_groups", "12", "--N", "32",
                           "--max_epochs", "2", "--batch_size", "4", "--learning_rate", "1e-3",
                           "--min_learning_rate", "1e-5", "--lr_schedule", "cosine",
                           "--lr-warmup-fraction", "0", "--accelerator", "cpu"]) == 0
    config = seen["result"].trainer.lr_scheduler_configs[0]
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert config.interval == "step"
    lr = json.loads((tmp_path / "cos" / "history.json").read_text())["lr"]
    steps = -(-11 // 4)            # 12 groups, one held out for validation
    expected = [cosine_learning_rate(s, 2 * steps, 1e-3, 1e-5, 0.0)
                for s in (steps - 1, 2 * steps - 1)]
    assert lr == pytest.approx(expected, rel=1e-6)
