"""Interrupted training: --resume continues from last.ckpt; bundles are never half-written."""
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from ptycho import simulate  # noqa: E402
from ptycho.bundle import load_bundle  # noqa: E402
from ptycho_torch import train  # noqa: E402
from ptycho_torch.lightning_module import PtychoLightningModule  # noqa: E402
from ptycho_torch.workflows import components  # noqa: E402


class Interrupted(RuntimeError):
    pass


def _leftovers(out):
    return [p.name for p in out.iterdir() if p.name.startswith(".model.")]


def _tiny_scan(tmp_path):
    """A 16-pattern N=32 grf scan at ``tmp_path/data.npz``."""
    path = tmp_path / "data.npz"
    assert simulate.main(["--output", str(path), "--N", "32", "--n-patterns", "16", "--object",
                          "grf", "--nphotons", "1e6", "--seed", "4", "--no-preview"]) == 0
    return path


def _train_argv(data, out, batch_size):
    """Training flags shared by the resume tests: 12 groups, 20 % of them for validation."""
    return ["--train_data_file", str(data), "--output_dir", str(out), "--N", "32",
            "--n_groups", "12", "--batch_size", str(batch_size), "--logger", "none",
            "--accelerator", "cpu", "--validation_fraction", "0.2"]


def test_resume_after_crash_and_atomic_bundle(tmp_path, monkeypatch):
    data = _tiny_scan(tmp_path)
    out = tmp_path / "run"
    base = _train_argv(data, out, batch_size=6)
    epochs_seen = []
    real_step = PtychoLightningModule.training_step

    def step(self, batch, batch_idx):
        epochs_seen.append(self.current_epoch)
        if crash["epoch"] is not None and self.current_epoch == crash["epoch"] and batch_idx == 1:
            raise Interrupted("simulated crash inside epoch 2")
        return real_step(self, batch, batch_idx)

    crash = {"epoch": None}
    monkeypatch.setattr(PtychoLightningModule, "training_step", step)

    # A: a complete one-epoch run leaves bundle A
    assert train.main(base + ["--max_epochs", "1"]) == 0
    first = json.loads((out / "model" / "manifest.json").read_text())

    # B: a longer run crashes inside its second epoch; bundle A is untouched
    crash["epoch"] = 1
    with pytest.raises(Interrupted):
        train.main(base + ["--max_epochs", "2"])
    assert json.loads((out / "model" / "manifest.json").read_text()) == first
    assert load_bundle(out / "model").manifest["weights_sha256"] == first["weights_sha256"]
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0
    assert _leftovers(out) == []

    # C: resume continues in epoch 2 from last.ckpt; writing the bundle then fails -> A survives
    crash["epoch"] = None
    epochs_seen.clear()

    def broken_save(module, path):
        path.write_bytes(b"partial")
        raise OSError("disk full while writing the weights")

    with monkeypatch.context() as m:
        m.setattr(components, "save_state_dict", broken_save)
        with pytest.raises(OSError, match="disk full"):
            train.main(base + ["--max_epochs", "2", "--resume"])
    assert set(epochs_seen) == {1}                      # epoch 1 (index 0) was not redone
    assert json.loads((out / "model" / "manifest.json").read_text()) == first
    assert _leftovers(out) == []

    # D: resume again; training is complete, so it finishes with a valid new bundle
    assert train.main(base + ["--max_epochs", "2", "--resume"]) == 0
    bundle = load_bundle(out / "model")
    assert bundle.manifest["weights_sha256"] != first["weights_sha256"]
    assert bundle.manifest["history_summary"]["epochs_run"] == 2
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [0, 1] and all(v is not None for v in history["train_loss"])
    assert _leftovers(out) == []


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    rc = train.main(_train_argv(_tiny_scan(tmp_path), tmp_path / "run", batch_size=6)
                    + ["--resume"])
    assert rc == 2
    assert "last.ckpt" in capsys.readouterr().err


def test_resumed_cosine_schedule_continues_the_curve(tmp_path, monkeypatch):
    data = _tiny_scan(tmp_path)

    def argv(out):
        return _train_argv(data, out, batch_size=5) + [
            "--max_epochs", "3", "--lr_schedule", "cosine", "--lr_warmup_fraction", "0.2"]

    assert train.main(argv(tmp_path / "straight")) == 0
    real_step = PtychoLightningModule.training_step
    crash = {"on": True}

    def step(self, batch, batch_idx):
        if crash["on"] and self.current_epoch == 1 and batch_idx == 1:
            raise Interrupted("simulated crash inside epoch 2")
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(PtychoLightningModule, "training_step", step)
    with pytest.raises(Interrupted):
        train.main(argv(tmp_path / "resumed"))
    crash["on"] = False
    assert train.main(argv(tmp_path / "resumed") + ["--resume"]) == 0
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())["lr"]
    resumed = json.loads((tmp_path / "resumed" / "history.json").read_text())["lr"]
    assert len(set(straight)) == 3 and resumed == pytest.approx(straight, rel=1e-9)


def test_last_checkpoint_follows_every_epoch_when_the_loss_worsens(tmp_path, monkeypatch):
    """``last.ckpt`` must hold the latest epoch, not the best one, or a resume redoes epochs."""
    data = _tiny_scan(tmp_path)
    out = tmp_path / "run"
    argv = _train_argv(data, out, batch_size=6) + ["--max_epochs", "3",
                                                   "--early_stopping_patience", "10"]
    real_step = PtychoLightningModule.training_step
    epochs_seen = []
    crash = {"on": True}

    def step(self, batch, batch_idx):
        epochs_seen.append(self.current_epoch)
        if crash["on"] and self.current_epoch == 2 and batch_idx == 1:
            raise Interrupted("simulated crash inside epoch 3")
        return real_step(self, batch, batch_idx)

    def worsening_validation(self, batch, batch_idx):
        loss = torch.tensor(float(self.current_epoch), dtype=torch.float64)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=1)
        return loss

    monkeypatch.setattr(PtychoLightningModule, "training_step", step)
    monkeypatch.setattr(PtychoLightningModule, "validation_step", worsening_validation)
    with pytest.raises(Interrupted):
        train.main(argv)
    ckpts = out / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in ckpts.iterdir()) == ["best-epoch=0.ckpt", "last.ckpt"]

    crash["on"] = False
    epochs_seen.clear()
    assert train.main(argv + ["--resume"]) == 0
    assert set(epochs_seen) == {2}                      # epochs 1 and 2 were not redone
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 2
    manifest = load_bundle(out / "model").manifest
    assert manifest["history_summary"]["best_epoch"] == 0
    assert manifest["history_summary"]["epochs_run"] == 3


def test_resume_in_a_moved_run_directory_keeps_the_best_epoch(tmp_path, monkeypatch):
    """A run directory copied elsewhere resumes as in place: the best score is not forgotten."""
    data = _tiny_scan(tmp_path)
    first_dir, moved = tmp_path / "first", tmp_path / "elsewhere" / "run"

    def argv(out, epochs):
        return _train_argv(data, out, batch_size=6) + ["--max_epochs", str(epochs),
                                                       "--early_stopping_patience", "10"]

    def worsening_validation(self, batch, batch_idx):
        loss = torch.tensor(float(self.current_epoch), dtype=torch.float64)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=1)
        return loss

    monkeypatch.setattr(PtychoLightningModule, "validation_step", worsening_validation)
    assert train.main(argv(first_dir, 2)) == 0
    moved.parent.mkdir()
    first_dir.rename(moved)
    assert train.main(argv(moved, 3) + ["--resume"]) == 0
    summary = load_bundle(moved / "model").manifest["history_summary"]
    assert summary["epochs_run"] == 3
    assert summary["best_epoch"] == 0 and summary["best_monitored_loss"] == 0.0


def test_resume_with_other_model_settings_exits_2_naming_them(tmp_path, capsys):
    data = _tiny_scan(tmp_path)
    out = tmp_path / "run"
    base = _train_argv(data, out, batch_size=6) + ["--max_epochs", "1"]
    assert train.main(base + ["--filter_scale", "0.25"]) == 0
    last = out / "checkpoints" / "last.ckpt"
    capsys.readouterr()

    # the checkpoint records its model settings: the message names the differing one
    assert train.main(base + ["--filter_scale", "0.5", "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(last) in err and "model.filter_scale: checkpoint 0.25, now 0.5" in err
    assert "Traceback" not in err

    # without recorded settings, the mismatching parameters and their shapes are named
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    del ckpt["hyper_parameters"]
    torch.save(ckpt, last)
    assert train.main(base + ["--filter_scale", "0.5", "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(last) in err and "weights do not fit" in err and "checkpoint (" in err
