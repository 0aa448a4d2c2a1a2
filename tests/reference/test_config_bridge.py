"""Config bridge: legacy names, flat/dotted keys, precedence, override records, backend kwargs."""

import sys

import pytest
import yaml

from ptycho.config import ConfigError, PtychoConfig, with_overrides
from ptycho.config_bridge import (
    Override,
    normalize_legacy_keys,
    resolve_config,
    to_dataloader_kwargs,
    to_keras_callback_kwargs,
    to_keras_compile_kwargs,
    to_keras_fit_kwargs,
    to_keras_optimizer_kwargs,
    to_keras_precision_policy,
    to_lightning_trainer_kwargs,
    to_torch_optimizer_kwargs,
    to_torch_scheduler_kwargs,
)


@pytest.mark.parametrize("key, value, dotted, expected", [
    ("nepochs", 7, "training.max_epochs", 7),
    ("n_images", 100, "data.n_groups", 100),
    ("neighbor_count", 9, "data.K", 9),
    ("K", 9, "data.K", 9),
    ("grid_size", 2, "model.gridsize", 2),
    ("mode", "Unsupervised", "model.mode", "unsupervised"),
    ("mode", "Supervised", "model.mode", "supervised"),
    ("model_type", "pinn", "model.mode", "unsupervised"),
    ("amp_activation", "silu", "model.amp_activation", "swish"),
    ("amp_activation", "SiLU", "model.amp_activation", "swish"),
    ("probe.big", False, "model.probe_big", False),
    ("probe.mask", True, "model.probe_mask", True),
    ("probe.trainable", True, "model.probe_trainable", True),
    ("intensity_scale.trainable", True, "model.intensity_scale_trainable", True),
    ("gridsize", 3, "model.gridsize", 3),
    ("max_epochs", 4, "training.max_epochs", 4),
    ("max-epochs", 4, "training.max_epochs", 4),
    ("train_data_file", "t.npz", "data.train_data_file", "t.npz"),
    ("accelerator", "cpu", "execution.accelerator", "cpu"),
    ("model_path", "b", "inference.model_path", "b"),
    ("stitch_crop", 10, "inference.stitch_crop", 10),
    ("training.batch_size", 5, "training.batch_size", 5),
])
def test_legacy_and_flat_names(key, value, dotted, expected):
    nested, _ = normalize_legacy_keys({key: value})
    section, name = dotted.split(".")
    assert nested == {section: {name: expected}}


def test_legacy_records():
    _, records = normalize_legacy_keys({"nepochs": 3, "mode": "Supervised", "gridsize": 2})
    assert Override("legacy", "training.max_epochs", 3, 3, "nepochs") in records
    assert Override("legacy", "model.mode", "Supervised", "supervised", "mode") in records
    assert all(r.key != "model.gridsize" for r in records)  # canonical name: no legacy record


@pytest.mark.parametrize("name", ["batch_size", "output_dir", "log_patch_stats", "patch_stats_limit"])
@pytest.mark.parametrize("context", ["training", "inference"])
def test_ambiguous_names_follow_context(name, context):
    value = {"batch_size": 3, "output_dir": "o", "log_patch_stats": True,
             "patch_stats_limit": 2}[name]
    nested, _ = normalize_legacy_keys({name: value}, context=context)
    assert nested == {context: {name: value}}


def test_flat_seed_sets_grouping_and_global_seed():
    nested, _ = normalize_legacy_keys({"seed": 11})
    assert nested == {"data": {"seed": 11}, "execution": {"seed": 11}}
    nested, _ = normalize_legacy_keys({"data": {"seed": 1}, "execution": {"seed": 2}})
    assert nested == {"data": {"seed": 1}, "execution": {"seed": 2}}


def test_nested_sections_with_legacy_inside():
    nested, _ = normalize_legacy_keys({"training": {"nepochs": 2, "batch_size": 4},
                                       "model": {"probe.big": False, "grid_size": 2}},
                                      context="inference")
    assert nested == {"training": {"max_epochs": 2, "batch_size": 4},
                      "model": {"probe_big": False, "gridsize": 2}}


def test_errors():
    with pytest.raises(ConfigError) as info:
        normalize_legacy_keys({"epochz": 3})
    assert "'epochz'" in str(info.value) and "max_epochs" in str(info.value) \
        and "nepochs" in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown key 'model.batch_size'; valid keys in 'model'"):
        normalize_legacy_keys({"model": {"batch_size": 3}})
    with pytest.raises(ConfigError, match=r"unknown key 'model.foo'"):
        normalize_legacy_keys({"model.foo": 3})
    with pytest.raises(ConfigError, match="conflicting values for data.K: K=4 and neighbor_count=5"):
        normalize_legacy_keys({"K": 4, "neighbor_count": 5})
    normalize_legacy_keys({"K": 4, "neighbor_count": 4})  # same value twice is fine
    with pytest.raises(ConfigError, match="context must be one of"):
        normalize_legacy_keys({}, context="eval")
    with pytest.raises(ConfigError, match="section 'model' must be a mapping"):
        normalize_legacy_keys({"model": 5})


def test_precedence_defaults_yaml_cli(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"gridsize": 2, "N": 32}, "nepochs": 9,
                                   "batch_size": 4, "learning_rate": "2e-4"}))
    config, records = resolve_config({"max_epochs": 3, "n_groups": None}, yaml_path=cfg)
    assert config.model.gridsize == 2 and config.model.N == 32      # from YAML
    assert config.training.max_epochs == 3                          # CLI beats YAML
    assert config.training.batch_size == 4                          # YAML, CLI unset
    assert config.training.learning_rate == 2e-4                    # YAML string coerced
    assert config.data.n_groups is None                             # None CLI value skipped
    assert config.training.validation_fraction == 0.1               # default
    assert Override("yaml", "training.max_epochs", 50, 9, "nepochs") in records
    assert Override("cli", "training.max_epochs", 9, 3, "max_epochs") in records
    assert Override("yaml", "model.gridsize", 1, 2, "model.gridsize") in records
    assert Override("legacy", "training.max_epochs", 9, 9, "nepochs") in records
    sources = [r.source for r in records]
    assert sources.index("cli") > max(i for i, s in enumerate(sources) if s == "yaml")


def test_resolve_with_base_and_json(tmp_path):
    base = with_overrides(PtychoConfig(), {"training.max_epochs": 2, "model.N": 128})
    path = tmp_path / "c.json"
    path.write_text('{"training": {"batch_size": 2}}')
    config, records = resolve_config({}, yaml_path=path, base=base)
    assert config.model.N == 128 and config.training.max_epochs == 2 \
        and config.training.batch_size == 2
    assert records == (Override("yaml", "training.batch_size", 16, 2, "training.batch_size"),)
    config, records = resolve_config(None, base=base)
    assert config == base and records == ()


def test_resolve_inference_context():
    config, _ = resolve_config({"batch_size": 5, "output_dir": "x"}, context="inference")
    assert config.inference.batch_size == 5 and config.inference.output_dir == "x"
    assert config.training.batch_size == 16 and config.training.output_dir == "outputs/train"


def test_resolve_errors_name_source(tmp_path):
    with pytest.raises(ConfigError, match=r"model.N: got 50.*\[value set by cli\]"):
        resolve_config({"N": 50})
    bad = tmp_path / "bad.yaml"
    bad.write_text("traning:\n  max_epochs: 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'traning'"):
        resolve_config({}, yaml_path=bad)
    bad.write_text("training:\n  max_epochs: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: training.max_epochs: expected an integer"):
        resolve_config({}, yaml_path=bad)
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config({}, yaml_path=tmp_path / "nope.yaml")


def test_override_values_are_canonical_types(tmp_path):
    _, records = resolve_config({"train_data_file": tmp_path / "x.npz", "devices": 2})
    by_key = {r.key: r for r in records}
    assert by_key["data.train_data_file"].new == str(tmp_path / "x.npz")
    assert by_key["execution.devices"].new == "2"
    assert Override.from_dict(by_key["execution.devices"].to_dict()) == by_key["execution.devices"]


def test_backend_kwargs():
    config, _ = resolve_config({"max_epochs": 7, "batch_size": 3, "learning_rate": 5e-4,
                                "accelerator": "gpu", "devices": "2", "precision": "bf16-mixed",
                                "deterministic": True, "jit_compile": True, "num_workers": 2,
                                "output_dir": "runs/a", "lr_reduce_factor": 0.2,
                                "min_learning_rate": 1e-6, "early_stopping_patience": 4})
    assert to_keras_fit_kwargs(config) == {"epochs": 7, "batch_size": 3, "shuffle": True}
    assert to_keras_compile_kwargs(config) == {"jit_compile": True}
    assert to_keras_optimizer_kwargs(config) == {"learning_rate": 5e-4}
    assert to_keras_callback_kwargs(config) == {
        "reduce_lr": {"factor": 0.2, "patience": 3, "min_lr": 1e-6, "min_delta": 1e-4},
        "early_stopping": {"patience": 4, "restore_best_weights": True}}
    assert to_keras_precision_policy(config) == "mixed_bfloat16"
    assert to_lightning_trainer_kwargs(config) == {
        "max_epochs": 7, "accelerator": "gpu", "devices": 2, "strategy": "auto",
        "precision": "bf16-mixed", "deterministic": True, "default_root_dir": "runs/a"}
    assert to_torch_optimizer_kwargs(config) == {"lr": 5e-4, "eps": 1e-7}
    assert to_torch_scheduler_kwargs(config) == {"mode": "min", "factor": 0.2, "patience": 2,
                                                 "min_lr": 1e-6, "threshold": 1e-4,
                                                 "threshold_mode": "abs"}
    assert to_dataloader_kwargs(config) == {"batch_size": 3, "num_workers": 2}
    assert to_dataloader_kwargs(config, "inference") == {"batch_size": 64, "num_workers": 2}
    default = PtychoConfig()
    assert to_lightning_trainer_kwargs(default)["precision"] == "32-true"
    assert to_lightning_trainer_kwargs(default)["devices"] == 1
    auto = with_overrides(default, {"execution.devices": "auto", "execution.precision": "64"})
    assert to_lightning_trainer_kwargs(auto)["devices"] == "auto"
    assert to_lightning_trainer_kwargs(auto)["precision"] == "64-true"
    assert to_keras_precision_policy(auto) == "float64"


def test_neighbour_count_follows_gridsize_unless_set(tmp_path):
    cfg, records = resolve_config({"gridsize": 3})
    assert cfg.data.K == 11
    derived = [r for r in records if r.source == "derived"]
    assert [(r.key, r.old, r.new, r.origin) for r in derived] == [
        ("data.K", 6, 11, "model.gridsize")]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"gridsize": 3}}))
    assert resolve_config({}, yaml_path=path)[0].data.K == 11
    # a K the user set is kept, or refused when too small
    cfg, records = resolve_config({"gridsize": 3, "K": 9})
    assert cfg.data.K == 9 and not any(r.source == "derived" for r in records)
    with pytest.raises(ConfigError, match=r"data.K: got 7; with model.gridsize=3"):
        resolve_config({"gridsize": 3, "K": 7})
    # the default already serves gridsize 1 and 2
    for g in (1, 2):
        cfg, records = resolve_config({"gridsize": g})
        assert cfg.data.K == 6 and not any(r.source == "derived" for r in records)


def test_bridge_does_not_import_frameworks():
    import subprocess

    code = ("import sys, ptycho.config_bridge, ptycho.cli_common, ptycho.bundle, ptycho.payload;"
            "print('tensorflow' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"
