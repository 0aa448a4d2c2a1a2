"""TensorFlow training: --resume continues from checkpoints/last.npz; --logger tensorboard."""
import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from ptycho import simulate, tf_training, train  # noqa: E402
from ptycho.bundle import load_bundle  # noqa: E402
from ptycho.tf_checkpoint import checkpoint_path, load_checkpoint  # noqa: E402


class Interrupted(RuntimeError):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("tf_resume") / "data.npz"
    assert simulate.main(["--output", str(path), "--N", "32", "--n-patterns", "16", "--object",
                          "grf", "--nphotons", "1e6", "--seed", "4", "--no-preview"]) == 0
    return path


COSINE = ["--lr_schedule", "cosine", "--lr_warmup_fraction", "0.2"]
# A plateau rule that fires in epoch 4 and early stopping after epoch 6 of 8 on this data: the
# run resumed after epoch 4 stops at the same epoch only with the restored counters.
PLATEAU = ["--lr_schedule", "plateau", "--learning_rate", "0.003", "--lr_reduce_patience", "1",
           "--lr_reduce_factor", "0.5", "--early_stopping_patience", "3"]


def _argv(data, out, epochs, *extra, schedule=COSINE):
    return ["--train_data_file", str(data), "--output_dir", str(out), "--N", "32",
            "--n_groups", "12", "--batch_size", "5", "--validation_fraction", "0.2",
            "--max_epochs", str(epochs), *schedule, *extra]


def _crash_in_epoch(monkeypatch, crash_epoch, seen):
    real = tf_training._run_epoch

    def run_epoch(step, split, batch_size, order, *, phase, epoch, **kw):
        if phase == "train":
            seen.append(epoch)
            if epoch == crash_epoch["value"]:
                raise Interrupted(f"simulated crash inside epoch {epoch + 1}")
        return real(step, split, batch_size, order, phase=phase, epoch=epoch, **kw)

    monkeypatch.setattr(tf_training, "_run_epoch", run_epoch)


@pytest.mark.parametrize("schedule, crash_epoch", [(COSINE, 2), (PLATEAU, 4)],
                         ids=["cosine", "plateau"])
def test_resume_after_crash_matches_an_uninterrupted_run(data, tmp_path, monkeypatch, schedule,
                                                         crash_epoch):
    assert train.main(_argv(data, tmp_path / "straight", 8, schedule=schedule)) == 0
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())

    out = tmp_path / "resumed"
    crash, seen = {"value": crash_epoch}, []
    _crash_in_epoch(monkeypatch, crash, seen)
    with pytest.raises(Interrupted):
        train.main(_argv(data, out, 8, schedule=schedule))
    assert not (out / "model").exists()               # no bundle from an unfinished run
    state = load_checkpoint(checkpoint_path(out))
    assert state.epochs_done == crash_epoch and len(state.history["epoch"]) == crash_epoch
    assert state.optimizer and state.weights

    crash["value"], seen[:] = None, []
    assert train.main(_argv(data, out, 8, "--resume", schedule=schedule)) == 0
    assert seen[0] == crash_epoch                      # finished epochs were not redone
    resumed = json.loads((out / "history.json").read_text())
    assert resumed["epoch"] == straight["epoch"]
    # the same batches, learning rates and optimiser state as the run that was not interrupted
    for key in ("lr", "train_loss", "val_loss"):
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, err_msg=key)
    bundle = load_bundle(out / "model")
    assert bundle.manifest["history_summary"] == load_bundle(
        tmp_path / "straight" / "model").manifest["history_summary"]
    assert load_checkpoint(checkpoint_path(out)).epochs_done == len(straight["epoch"])


def test_resume_errors_are_clear(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(_argv(data, out, 1, "--resume")) == 2
    assert "no checkpoint at" in capsys.readouterr().err

    assert train.main(_argv(data, out, 1)) == 0
    assert train.main(_argv(data, out, 2, "--resume", "--filter_scale", "0.5")) == 2
    err = capsys.readouterr().err
    assert "different network" in err and "model.filter_scale" in err

    checkpoint_path(out).write_bytes(b"not an npz")
    assert train.main(_argv(data, out, 2, "--resume")) == 2
    assert "not a readable TensorFlow training checkpoint" in capsys.readouterr().err


def test_tensorboard_logger_writes_the_history(data, tmp_path):
    import tensorflow as tf

    out = tmp_path / "tb"
    assert train.main(_argv(data, out, 2, "--logger", "tensorboard")) == 0
    events = sorted((out / "logs").glob("events.out.tfevents.*"))
    assert len(events) == 1
    scalars: dict = {}
    for event in tf.compat.v1.train.summary_iterator(str(events[0])):
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append(
                (event.step, float(tf.make_ndarray(value.tensor))))
    history = json.loads((out / "history.json").read_text())
    for key in ("train_loss", "val_loss", "lr", "intensity_scale"):
        assert [s for s, _ in scalars[key]] == [0, 1]
        np.testing.assert_allclose([v for _, v in scalars[key]], history[key], rtol=1e-6)
    assert not (tmp_path / "csv" / "logs").exists()
    assert train.main(_argv(data, tmp_path / "csv", 1, "--logger", "csv")) == 0
    assert not (tmp_path / "csv" / "logs").exists() and (tmp_path / "csv" / "history.csv").is_file()
