"""Shared CLI flags: every flag, in every spelling, reaches its field of the resolved config."""

import argparse

import pytest
import yaml

from ptycho.cli_common import (
    add_execution_arguments,
    add_inference_arguments,
    add_training_arguments,
    namespace_to_overrides,
    resolve_namespace,
)
from ptycho.config import PtychoConfig


def _parser(context):
    p = argparse.ArgumentParser(prog=f"test-{context}", exit_on_error=False)
    if context == "training":
        add_training_arguments(p)
    else:
        add_inference_arguments(p)
    add_execution_arguments(p)
    return p


def _resolve(context, argv):
    ns = _parser(context).parse_args(argv)
    return resolve_namespace(ns, context=context)[0]


def _get(config, dotted):
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


# (context, spellings, value typed on the command line, dotted field(s), expected value)
VALUE_FLAGS = [
    ("training", ["--train_data_file", "--train-data-file"], "d.npz", "data.train_data_file", "d.npz"),
    ("training", ["--test_data_file", "--test-data-file"], "t.npz", "data.test_data_file", "t.npz"),
    ("training", ["--n_groups", "--n-groups", "--n_images", "--n-images"], "7", "data.n_groups", 7),
    ("training", ["--K", "--neighbor_count", "--neighbor-count"], "9", "data.K", 9),
    ("training", ["--nphotons"], "1e6", "data.nphotons", 1e6),
    ("training", ["--N"], "128", "model.N", 128),
    ("training", ["--gridsize", "--grid_size", "--grid-size"], "2", "model.gridsize", 2),
    ("training", ["--amp_activation", "--amp-activation"], "softplus", "model.amp_activation", "softplus"),
    ("training", ["--amp_activation", "--amp-activation"], "silu", "model.amp_activation", "swish"),
    ("training", ["--mode"], "Supervised", "model.mode", "supervised"),
    ("training", ["--interpolation"], "fourier", "model.interpolation", "fourier"),
    ("training", ["--group_pad", "--group-pad"], "5", "model.group_pad", 5),
    ("training", ["--filter_scale", "--filter-scale"], "0.5", "model.filter_scale", 0.5),
    ("training", ["--decoder"], "UNet", "model.decoder", "unet"),
    ("training", ["--projection_steps", "--projection-steps"], "3", "model.projection_steps", 3),
    ("training", ["--output_dir", "--output-dir"], "runs/x", "training.output_dir", "runs/x"),
    ("training", ["--max_epochs", "--max-epochs", "--nepochs"], "3", "training.max_epochs", 3),
    ("training", ["--batch_size", "--batch-size"], "4", "training.batch_size", 4),
    ("training", ["--learning_rate", "--learning-rate"], "2e-4", "training.learning_rate", 2e-4),
    ("training", ["--lr_schedule", "--lr-schedule"], "Cosine", "training.lr_schedule", "cosine"),
    ("training", ["--lr_warmup_fraction", "--lr-warmup-fraction"], "0.1",
     "training.lr_warmup_fraction", 0.1),
    ("training", ["--lr_reduce_factor", "--lr-reduce-factor"], "0.3", "training.lr_reduce_factor", 0.3),
    ("training", ["--lr_reduce_patience", "--lr-reduce-patience"], "2", "training.lr_reduce_patience", 2),
    ("training", ["--min_learning_rate", "--min-learning-rate"], "1e-6", "training.min_learning_rate", 1e-6),
    ("training", ["--early_stopping_patience", "--early-stopping-patience"], "5",
     "training.early_stopping_patience", 5),
    ("training", ["--validation_fraction", "--validation-fraction"], "0.2",
     "training.validation_fraction", 0.2),
    ("training", ["--patch_stats_limit", "--patch-stats-limit"], "2", "training.patch_stats_limit", 2),
    ("inference", ["--model_path", "--model-path"], "bundle", "inference.model_path", "bundle"),
    ("inference", ["--test_data", "--test-data"], "x.npz", "inference.test_data", "x.npz"),
    ("inference", ["--output_dir", "--output-dir"], "inf/o", "inference.output_dir", "inf/o"),
    ("inference", ["--batch_size", "--batch-size"], "5", "inference.batch_size", 5),
    ("inference", ["--n_groups", "--n-groups", "--n_images", "--n-images"], "11", "data.n_groups", 11),
    ("inference", ["--stitch_crop", "--stitch-crop"], "16", "inference.stitch_crop", 16),
    ("inference", ["--stitch_weighting", "--stitch-weighting"], "Uniform", "inference.stitch_weighting",
     "uniform"),
    ("inference", ["--patch_stats_limit", "--patch-stats-limit"], "3", "inference.patch_stats_limit", 3),
    ("inference", ["--refine_steps", "--refine-steps"], "25", "inference.refine_steps", 25),
    ("inference", ["--refine_learning_rate", "--refine-learning-rate"], "0.05",
     "inference.refine_learning_rate", 0.05),
    ("inference", ["--com_phase_steps", "--com-phase-steps"], "2", "inference.com_phase_steps", 2),
    ("inference", ["--com_phase_smoothing", "--com-phase-smoothing"], "0.25",
     "inference.com_phase_smoothing", 0.25),
    ("inference", ["--projection_steps", "--projection-steps"], "20", "model.projection_steps", 20),
    ("training", ["--accelerator"], "cpu", "execution.accelerator", "cpu"),
    ("training", ["--devices"], "2", "execution.devices", "2"),
    ("training", ["--devices"], "auto", "execution.devices", "auto"),
    ("training", ["--strategy"], "ddp", "execution.strategy", "ddp"),
    ("training", ["--precision"], "bf16-mixed", "execution.precision", "bf16-mixed"),
    ("training", ["--num_workers", "--num-workers"], "3", "execution.num_workers", 3),
    ("training", ["--logger"], "tensorboard", "execution.logger", "tensorboard"),
    ("training", ["--seed"], "5", "execution.seed", 5),
    ("training", ["--seed"], "5", "data.seed", 5),
    ("inference", ["--accelerator"], "gpu", "execution.accelerator", "gpu"),
    ("inference", ["--seed"], "8", "execution.seed", 8),
]

# (context, spellings without the "--"/"--no-" prefix, dotted field)
BOOL_FLAGS = [
    ("training", ["probe_big", "probe-big"], "model.probe_big"),
    ("training", ["probe_mask", "probe-mask"], "model.probe_mask"),
    ("training", ["probe_trainable", "probe-trainable"], "model.probe_trainable"),
    ("training", ["intensity_scale_trainable", "intensity-scale-trainable"],
     "model.intensity_scale_trainable"),
    ("training", ["per_pattern", "per-pattern"], "model.per_pattern"),
    ("training", ["log_patch_stats", "log-patch-stats"], "training.log_patch_stats"),
    ("training", ["resume"], "training.resume"),
    ("inference", ["log_patch_stats", "log-patch-stats"], "inference.log_patch_stats"),
    ("training", ["deterministic"], "execution.deterministic"),
    ("training", ["jit_compile", "jit-compile"], "execution.jit_compile"),
    ("inference", ["jit_compile", "jit-compile"], "execution.jit_compile"),
    ("inference", ["refine_probe", "refine-probe"], "inference.refine_probe"),
]
# Flags that are valid only together with another one: the other flag and the field it sets.
REQUIRES = {"inference.refine_probe": (["--refine-steps", "5"], "inference.refine_steps")}


def _value_cases():
    for context, spellings, value, dotted, expected in VALUE_FLAGS:
        for flag in spellings:
            yield pytest.param(context, [flag, value], dotted, expected,
                               id=f"{context}:{flag}={value}->{dotted}")


def _bool_cases():
    for context, names, dotted in BOOL_FLAGS:
        extra = REQUIRES.get(dotted, ([], None))[0]
        for name in names:
            yield pytest.param(context, [*extra, f"--{name}"], dotted, True,
                               id=f"{context}:--{name}")
            yield pytest.param(context, [*extra, f"--no-{name}"], dotted, False,
                               id=f"{context}:--no-{name}")


@pytest.mark.parametrize("context, argv, dotted, expected", [*_value_cases(), *_bool_cases()])
def test_flag_reaches_field(context, argv, dotted, expected):
    config = _resolve(context, argv)
    assert _get(config, dotted) == expected
    # and nothing else moved away from the defaults except what the flag implies
    default = PtychoConfig()
    changed = {f"{s}.{k}" for s, fields in config.to_dict().items()
               for k, v in fields.items() if v != default.to_dict()[s][k]}
    assert changed <= {dotted, "data.seed", "execution.seed", REQUIRES.get(dotted, (0, None))[1]}


def test_table_covers_every_registered_flag():
    for context in ("training", "inference"):
        parser = _parser(context)
        registered = {a.dest for a in parser._actions if a.option_strings and a.dest not in
                      ("help", "config")}
        covered = {d.split(".")[1] for c, _, _, d, _ in VALUE_FLAGS if c == context}
        covered |= {d.split(".")[1] for c, _, d in BOOL_FLAGS if c == context}
        covered |= {d.split(".")[1] for c, _, _, d, _ in VALUE_FLAGS
                    if d.startswith("execution.")} | {"deterministic", "jit_compile"}
        assert registered <= covered, registered - covered


def test_every_option_has_both_spellings_default_none_and_help():
    for context in ("training", "inference"):
        parser = _parser(context)
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.default is None, action.option_strings
            assert action.help and "Default:" in action.help, action.option_strings
            for opt in action.option_strings:
                body = opt[2:]
                assert f"--{body.replace('_', '-')}" in action.option_strings, opt
                assert f"--{body.replace('-', '_')}" in action.option_strings or \
                    body.startswith("no-"), opt


def test_no_flags_gives_defaults():
    for context in ("training", "inference"):
        ns = _parser(context).parse_args([])
        assert namespace_to_overrides(ns) == {}
        config, records = resolve_namespace(ns, context=context)
        assert config == PtychoConfig() and records == ()


def test_log_patch_stats_true_and_false_against_yaml(tmp_path):
    cfg = tmp_path / "on.yaml"
    cfg.write_text(yaml.safe_dump({"training": {"log_patch_stats": True}}))
    assert _resolve("training", ["--config", str(cfg)]).training.log_patch_stats is True
    assert _resolve("training", ["--config", str(cfg), "--no-log-patch-stats"]
                    ).training.log_patch_stats is False
    assert _resolve("training", ["--log-patch-stats"]).training.log_patch_stats is True
    assert _resolve("training", []).training.log_patch_stats is False
    # "--log-patch-stats False" must not silently mean True
    with pytest.raises((SystemExit, argparse.ArgumentError)):
        _parser("training").parse_args(["--log-patch-stats", "False"])


def test_unset_flags_do_not_override_yaml(tmp_path):
    values = {
        "model": {"N": 32, "gridsize": 2, "probe_big": False, "amp_activation": "softplus",
                  "interpolation": "fourier", "probe_trainable": True},
        "data": {"K": 7, "n_groups": 20, "nphotons": 1e5, "train_data_file": "y.npz"},
        "training": {"max_epochs": 4, "batch_size": 2, "learning_rate": 5e-4,
                     "log_patch_stats": True, "patch_stats_limit": 1, "output_dir": "o"},
        "execution": {"accelerator": "cpu", "precision": "64", "seed": 3, "jit_compile": True},
    }
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(values))
    expected = PtychoConfig.from_dict(values)
    assert _resolve("training", ["--config", str(cfg)]) == expected
    # one flag changes exactly one field
    config = _resolve("training", ["--config", str(cfg), "--batch-size", "8"])
    assert config.training.batch_size == 8
    assert config.to_dict()["model"] == expected.to_dict()["model"]
    assert config.training.log_patch_stats is True and config.training.max_epochs == 4


def test_namespace_to_overrides_keeps_only_given_shared_flags():
    parser = _parser("training")
    parser.add_argument("--plot", action="store_true")
    ns = parser.parse_args(["--nepochs", "2", "--no-probe-big", "--plot", "--config", "x.yaml"])
    assert namespace_to_overrides(ns) == {"max_epochs": 2, "probe_big": False}


@pytest.mark.parametrize("argv", [["--N", "48"], ["--mode", "semi"], ["--precision", "16"],
                                  ["--accelerator", "tpu"], ["--max_epochs", "two"]])
def test_bad_values_are_usage_errors(argv):
    with pytest.raises((SystemExit, argparse.ArgumentError)):
        _parser("training").parse_args(argv)


def test_inert_settings_are_named_for_the_backend_that_ignores_them():
    from ptycho.cli_common import inert_settings
    from ptycho.config import ExecutionConfig

    both = ExecutionConfig(num_workers=2, jit_compile=True)
    assert [n.split(" ")[0] for n in inert_settings(both, "tf")] == ["execution.num_workers=2"]
    assert [n.split(" ")[0] for n in inert_settings(both, "torch")] == ["execution.jit_compile"]
    assert inert_settings(ExecutionConfig(), "tf") == inert_settings(ExecutionConfig(), "torch") == []


def test_help_of_n_and_k_names_where_the_value_comes_from():
    from ptycho.config_bridge import resolve_config

    actions = {a.dest: a for a in _parser("training")._actions}
    n_help, k_help = actions["N"].help, actions["K"].help
    assert "Default: 64" not in n_help and "training data" in n_help
    assert "Default: 6," not in k_help and "gridsize**2 + 2" in k_help
    # the example the help quotes is what the resolver derives
    assert resolve_config({"gridsize": 3})[0].data.K == 11 and "11 at gridsize 3" in k_help
