"""Configuration dataclasses: defaults, validation, dict/file round trips, overrides."""

import dataclasses
import json

import pytest

from ptycho.atomic import atomic_save_npz, atomic_write_json, sha256_file
from ptycho.config import (
    ConfigError,
    DataConfig,
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    PtychoConfig,
    TrainingConfig,
    from_dict,
    load_config,
    save_config,
    to_dict,
    with_overrides,
)


def test_defaults_match_contract():
    c = PtychoConfig()
    assert dataclasses.asdict(c.model) == dict(
        N=64, gridsize=1, amp_activation="softplus", probe_big=True, probe_mask=False,
        probe_trainable=False, intensity_scale_trainable=False, mode="unsupervised",
        interpolation="bilinear", group_pad=None, filter_scale=1.0, decoder="reference",
        per_pattern=False, projection_steps=0)
    assert dataclasses.asdict(c.data) == dict(
        train_data_file=None, test_data_file=None, n_groups=None, K=6, nphotons=None, seed=0)
    assert dataclasses.asdict(c.training) == dict(
        max_epochs=50, batch_size=16, learning_rate=1e-3, lr_schedule="plateau",
        lr_warmup_fraction=0.05, lr_reduce_factor=0.5,
        lr_reduce_patience=3, min_learning_rate=1e-5, early_stopping_patience=8,
        validation_fraction=0.1, output_dir="outputs/train", log_patch_stats=False,
        patch_stats_limit=4, resume=False)
    assert dataclasses.asdict(c.inference) == dict(
        model_path=None, test_data=None, output_dir="outputs/inference", batch_size=64,
        log_patch_stats=False, patch_stats_limit=4, stitch_crop=None, stitch_weighting="probe",
        refine_steps=0, refine_learning_rate=0.1, refine_probe=False, com_phase_steps=0,
        com_phase_smoothing=0.5)
    assert dataclasses.asdict(c.execution) == dict(
        accelerator="auto", devices="1", strategy="auto", precision="32", num_workers=0,
        logger="csv", seed=0, deterministic=False, jit_compile=False)


def test_frozen():
    c = PtychoConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.model.N = 32  # type: ignore[misc]


@pytest.mark.parametrize("N", [32, 64, 128, 256])
def test_all_valid_N_accepted(N):
    assert ModelConfig(N=N).N == N


@pytest.mark.parametrize("cls, kwargs, needle", [
    (ModelConfig, {"N": 48}, "model.N: got 48; allowed: 32 | 64 | 128 | 256"),
    (ModelConfig, {"N": True}, "model.N"),
    (ModelConfig, {"gridsize": 0}, "model.gridsize: got 0"),
    (ModelConfig, {"amp_activation": "relu"}, "'sigmoid' | 'softplus' | 'swish'"),
    (ModelConfig, {"mode": "Unsupervised"}, "model.mode: got 'Unsupervised'"),
    (ModelConfig, {"interpolation": "cubic"}, "'bilinear' | 'fourier'"),
    (ModelConfig, {"probe_big": "False"}, "model.probe_big: expected true or false"),
    (ModelConfig, {"group_pad": -1}, "model.group_pad"),
    (DataConfig, {"nphotons": 0}, "data.nphotons: got 0.0; allowed: a number > 0"),
    (DataConfig, {"nphotons": float("inf")}, "data.nphotons: expected a finite number"),
    (DataConfig, {"n_groups": 0}, "data.n_groups"),
    (DataConfig, {"K": 0}, "data.K"),
    (DataConfig, {"seed": -1}, "data.seed"),
    (DataConfig, {"train_data_file": ""}, "data.train_data_file"),
    (TrainingConfig, {"max_epochs": 0}, "training.max_epochs: got 0"),
    (TrainingConfig, {"batch_size": 0}, "training.batch_size"),
    (TrainingConfig, {"batch_size": 2.5}, "training.batch_size: expected an integer"),
    (TrainingConfig, {"learning_rate": 0.0}, "training.learning_rate"),
    (TrainingConfig, {"learning_rate": "fast"}, "training.learning_rate: expected a number"),
    (TrainingConfig, {"lr_reduce_factor": 1.0}, "training.lr_reduce_factor"),
    (TrainingConfig, {"validation_fraction": 0.0}, "training.validation_fraction"),
    (TrainingConfig, {"validation_fraction": 1.0}, "0 < value < 1"),
    (TrainingConfig, {"patch_stats_limit": 0}, "training.patch_stats_limit"),
    (ModelConfig, {"filter_scale": 0.0}, r"model.filter_scale: got 0.0; allowed: a number in"),
    (ModelConfig, {"filter_scale": 8}, "model.filter_scale"),
    (InferenceConfig, {"batch_size": -3}, "inference.batch_size"),
    (InferenceConfig, {"patch_stats_limit": 0}, "inference.patch_stats_limit"),
    (InferenceConfig, {"stitch_crop": 0}, "inference.stitch_crop"),
    (InferenceConfig, {"refine_steps": -1}, "inference.refine_steps"),
    (InferenceConfig, {"refine_learning_rate": 0.0}, "inference.refine_learning_rate"),
    (InferenceConfig, {"refine_probe": True}, "inference.refine_probe"),
    (InferenceConfig, {"com_phase_steps": -1}, "inference.com_phase_steps"),
    (InferenceConfig, {"com_phase_smoothing": 0.0}, "inference.com_phase_smoothing"),
    (InferenceConfig, {"com_phase_smoothing": float("nan")}, "inference.com_phase_smoothing"),
    (ExecutionConfig, {"accelerator": "tpu"}, "'auto' | 'cpu' | 'gpu'"),
    (ExecutionConfig, {"devices": "0"}, "execution.devices"),
    (ExecutionConfig, {"devices": "many"}, "execution.devices"),
    (ExecutionConfig, {"precision": "16"}, "'32' | '16-mixed' | 'bf16-mixed' | '64'"),
    (ExecutionConfig, {"logger": "wandb"}, "'none' | 'csv' | 'tensorboard'"),
    (ExecutionConfig, {"num_workers": -1}, "execution.num_workers"),
    (ExecutionConfig, {"deterministic": 1}, "execution.deterministic"),
])
def test_invalid_values_raise_naming_field(cls, kwargs, needle):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_lossless_coercions():
    t = TrainingConfig(learning_rate="1e-3", max_epochs=5.0, batch_size="8")
    assert t.learning_rate == 1e-3 and isinstance(t.learning_rate, float)
    assert t.max_epochs == 5 and isinstance(t.max_epochs, int)
    assert t.batch_size == 8
    e = ExecutionConfig(devices=2, precision=64)
    assert e.devices == "2" and e.precision == "64"
    assert ExecutionConfig(devices="auto").devices == "auto"


def test_cross_section_rules():
    with pytest.raises(ConfigError, match=r"data.K: got 3; with model.gridsize=2 .* >= gridsize\*\*2 = 4"):
        PtychoConfig(model=ModelConfig(gridsize=2), data=DataConfig(K=3))
    assert PtychoConfig(model=ModelConfig(gridsize=2), data=DataConfig(K=4)).data.K == 4
    # gridsize 1 never needs K >= 1 beyond the field's own rule
    assert PtychoConfig(data=DataConfig(K=1)).data.K == 1
    with pytest.raises(ConfigError, match="inference.stitch_crop: got 40"):
        PtychoConfig(model=ModelConfig(N=32), inference=InferenceConfig(stitch_crop=40))


def test_resolved_helpers():
    c = PtychoConfig()
    assert c.model.resolved_group_pad == 32
    assert c.resolved_stitch_crop == 64
    c2 = with_overrides(c, {"model.probe_big": False, "model.group_pad": 5})
    assert c2.resolved_stitch_crop == 32 and c2.model.resolved_group_pad == 5
    assert with_overrides(c, {"inference.stitch_crop": 20}).resolved_stitch_crop == 20


def test_unknown_keys_rejected_by_name():
    with pytest.raises(ConfigError) as info:
        from_dict({"model": {"N": 64, "grid_size": 2}})
    msg = str(info.value)
    assert "model.grid_size" in msg and "gridsize" in msg and "amp_activation" in msg
    with pytest.raises(ConfigError, match="unknown config section.*'modle'.*valid sections: model"):
        from_dict({"modle": {}})
    with pytest.raises(ConfigError, match="model: expected a mapping"):
        from_dict({"model": 3})


def _custom_config():
    return from_dict({
        "model": {"N": 32, "gridsize": 2, "amp_activation": "swish", "probe_big": False,
                  "mode": "supervised", "interpolation": "fourier", "group_pad": 7},
        "data": {"train_data_file": "a/train.npz", "n_groups": 12, "K": 5, "nphotons": 1e9,
                 "seed": 3},
        "training": {"max_epochs": 2, "learning_rate": 3.3e-4, "min_learning_rate": 1e-7,
                     "validation_fraction": 0.25, "log_patch_stats": True},
        "inference": {"model_path": "m", "stitch_crop": 16},
        "execution": {"accelerator": "cpu", "devices": "auto", "precision": "bf16-mixed",
                      "logger": "none", "deterministic": True, "jit_compile": True},
    })


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_save_load_round_trip_exact(tmp_path, suffix):
    for config in (PtychoConfig(), _custom_config()):
        path = save_config(config, tmp_path / f"cfg{suffix}")
        loaded = load_config(path)
        assert loaded == config
        assert to_dict(loaded) == to_dict(config)
        assert load_config(str(path)) == config
    assert [p.name for p in tmp_path.iterdir()] == [f"cfg{suffix}"]  # no temp files left


def test_dict_round_trip_and_partial_sections():
    c = _custom_config()
    assert from_dict(c.to_dict()) == c
    assert PtychoConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    partial = load_config({"training": {"max_epochs": 7}})
    assert partial.training.max_epochs == 7 and partial.model == ModelConfig()


def test_load_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  N: 50\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: model.N: got 50"):
        load_config(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json: invalid JSON"):
        load_config(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: top level must be a mapping"):
        load_config(listy)
    with pytest.raises(ConfigError, match="unsupported config file type '.toml'"):
        load_config(tmp_path / "x.toml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == PtychoConfig()
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize("name, text", [
    ("twice.yaml", "training:\n  max_epochs: 3\n  max_epochs: 5\n"),
    ("twice.json", '{"training": {"max_epochs": 3, "max_epochs": 5}}'),
    ("sections.yaml", "training:\n  max_epochs: 3\ntraining:\n  batch_size: 4\n"),
])
def test_a_key_given_twice_is_refused(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{name}: key '\w+' is given twice"):
        load_config(path)


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("training: &t\n  max_epochs: 3\n  batch_size: 4\n"
                    "model:\n  gridsize: 2\n")
    assert load_config(path).training.max_epochs == 3
    from ptycho.config import read_config_file

    path.write_text("base: &b\n  max_epochs: 3\ntraining:\n  <<: *b\n  max_epochs: 5\n")
    assert read_config_file(path)["training"] == {"max_epochs": 5}


def test_with_overrides_validates_and_is_new():
    c = PtychoConfig()
    c2 = with_overrides(c, {"model.gridsize": 2, "data.K": 4, "training.max_epochs": 3})
    assert (c2.model.gridsize, c2.data.K, c2.training.max_epochs) == (2, 4, 3)
    assert c.model.gridsize == 1  # original untouched
    with pytest.raises(ConfigError, match="data.K: got 1"):
        with_overrides(c, {"model.gridsize": 2, "data.K": 1})
    with pytest.raises(ConfigError, match="unknown key 'model.gridsze'.*gridsize"):
        with_overrides(c, {"model.gridsze": 2})
    with pytest.raises(ConfigError, match="must be '<section>.<field>'"):
        with_overrides(c, {"gridsize": 2})


def test_atomic_helpers(tmp_path):
    import numpy as np

    p = atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1.5]})
    assert json.loads(p.read_text()) == {"a": [1.5], "b": 1}
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "n.json", {"x": float("nan")})
    assert not (tmp_path / "n.json").exists()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.json"]
    q = atomic_save_npz(tmp_path / "d.npz", {"x": np.arange(4)})
    with np.load(q, allow_pickle=False) as z:
        assert z["x"].tolist() == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="dtype object"):
        atomic_save_npz(tmp_path / "o.npz", {"x": np.array([None, 1], dtype=object)})
    import hashlib

    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_model_config_differences_names_settings_and_fills_missing_ones_with_defaults():
    from ptycho.config import model_config_differences

    now = to_dict(PtychoConfig())["model"]
    assert model_config_differences(now, now) == ""
    older = {k: v for k, v in now.items() if k != "decoder"}   # written before the setting
    assert model_config_differences(older, now) == ""
    unet = dict(now, decoder="unet")
    assert model_config_differences(older, unet) == \
        "model.decoder: checkpoint 'reference', now 'unet'"
    assert model_config_differences(dict(now, gridsize=2), unet) == (
        "model.decoder: checkpoint 'reference', now 'unet', model.gridsize: checkpoint 2, now 1")
