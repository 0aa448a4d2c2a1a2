"""ptycho_torch.config_bridge: payload -> Trainer kwargs, logger, callbacks."""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from ptycho.config import ConfigError  # noqa: E402
from ptycho_torch import config_bridge as cb  # noqa: E402
from tests.torch.torch_testdata import make_payload  # noqa: E402


def test_trainer_kwargs_carry_every_execution_and_training_setting(tiny_scan, tmp_path):
    payload = make_payload(
        tiny_scan, output_dir=tmp_path / "run",
        training={"max_epochs": 7, "early_stopping_patience": 2},
        execution={"accelerator": "cpu", "devices": "1", "strategy": "auto",
                   "precision": "bf16-mixed", "deterministic": True, "logger": "csv"})
    kw = cb.trainer_kwargs(payload, monitor="val_loss")
    assert kw["max_epochs"] == 7 and kw["accelerator"] == "cpu" and kw["devices"] == 1
    assert kw["strategy"] == "auto" and kw["precision"] == "bf16-mixed"
    assert kw["deterministic"] is True and kw["enable_progress_bar"] is True
    assert kw["default_root_dir"] == str(tmp_path / "run")
    assert isinstance(kw["logger"], CSVLogger)
    assert kw["logger"].save_dir == str(tmp_path / "run")
    ckpts = [c for c in kw["callbacks"] if isinstance(c, ModelCheckpoint)]
    assert [c.dirpath for c in ckpts] == [str(tmp_path / "run" / "checkpoints")] * 2
    best = cb.best_checkpoint_callback(kw["callbacks"])
    assert best.monitor == "val_loss" and best.save_top_k == 1 and not best.save_last
    last = next(c for c in ckpts if c is not best)
    assert last.monitor is None and last.filename == "last"
    stop = next(c for c in kw["callbacks"] if isinstance(c, EarlyStopping))
    assert stop.patience == 2 and stop.monitor == "val_loss"
    assert any(isinstance(c, TQDMProgressBar) for c in kw["callbacks"])
    assert cb.last_checkpoint_path(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "last.ckpt"


def test_logger_none_and_extra_callbacks(tiny_scan, tmp_path):
    payload = make_payload(tiny_scan, output_dir=tmp_path, execution={"logger": "none"})
    marker = object()
    kw = cb.trainer_kwargs(payload, monitor="train_loss", extra_callbacks=[marker])
    assert kw["logger"] is False and kw["callbacks"][-1] is marker


def test_gpu_without_cuda_is_an_error_not_a_silent_cpu_run(tiny_scan, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    payload = make_payload(tiny_scan, output_dir=tmp_path, execution={"accelerator": "gpu"})
    with pytest.raises(ConfigError, match="execution.accelerator: 'gpu'"):
        cb.trainer_kwargs(payload)
    assert cb.resolve_accelerator("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cb.resolve_accelerator("gpu") == "cuda" and cb.resolve_accelerator("auto") == "cuda"


def test_tensorboard_logger_needs_the_package(tiny_scan, tmp_path, monkeypatch):
    import importlib.util

    payload = make_payload(tiny_scan, output_dir=tmp_path, execution={"logger": "tensorboard"})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("tensorboard") else real(name, *a))
    with pytest.raises(ConfigError, match="execution.logger: 'tensorboard' needs"):
        cb.build_logger(payload)


def test_tensorboard_logger_records_the_losses(tiny_scan, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ptycho_torch.workflows.components import run_training

    payload = make_payload(tiny_scan, output_dir=tmp_path, execution={"logger": "tensorboard"},
                           training={"max_epochs": 2, "batch_size": 8})
    run_training(payload, tiny_scan)
    events = sorted((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train_loss", "val_loss"} <= set(tags), tags
    assert len(acc.Scalars("val_loss")) == 2
