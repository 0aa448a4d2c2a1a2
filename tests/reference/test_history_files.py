"""ptycho.history_files: history.json / history.csv / loss_curve.png of both backends."""
import csv
import json

import numpy as np
from matplotlib.image import imread

from ptycho.history_files import training_summary, write_history

KEYS = ("epoch", "train_loss", "val_loss", "train_nll_full", "val_nll_full", "lr",
        "intensity_scale", "time_s")


def _history():
    history = {k: [] for k in KEYS}
    for epoch in range(3):
        row = dict(epoch=epoch, train_loss=-10.0 - epoch, val_loss=float("nan"),
                   train_nll_full=2.0 - epoch / 10, val_nll_full=None, lr=1e-3,
                   intensity_scale=3.0, time_s=0.5)
        for k in history:
            history[k].append(row[k])
    return history


def test_files_hold_every_epoch_with_gaps_for_missing_values(tmp_path):
    paths = write_history(_history(), tmp_path, title="t")
    data = json.loads(paths["json"].read_text())
    assert data["val_loss"] == [None, None, None] and data["train_loss"] == [-10.0, -11.0, -12.0]
    assert data["val_nll_full"] == [None, None, None]
    rows = list(csv.reader(paths["csv"].read_text().splitlines()))
    assert rows[0] == list(KEYS) and rows[2][2] == "" and rows[2][4] == "" and len(rows) == 4
    assert float(rows[3][3]) == 1.8


def test_loss_curve_has_a_full_nll_panel_unless_supervised(tmp_path):
    for sub in "abc":
        (tmp_path / sub).mkdir()
    two = imread(write_history(_history(), tmp_path / "a", title="t")["png"])
    one = imread(write_history(_history(), tmp_path / "b", title="t", full_nll=False)["png"])
    assert two.shape[1] == 2 * one.shape[1] and two.shape[0] == one.shape[0]
    assert np.ptp(one[..., :3]) > 0.5                  # a real plot, not a blank canvas
    no_nll = {k: v for k, v in _history().items() if "nll" not in k}
    alone = imread(write_history(no_nll, tmp_path / "c", title="t")["png"])
    assert alone.shape == one.shape


def test_training_summary_keeps_the_last_finite_losses_and_a_0_based_best_epoch():
    history = {"epoch": [0, 1, 2], "train_loss": [3.0, 2.0, 1.0],
               "val_loss": [2.5, 1.5, float("nan")], "lr": [1e-3] * 3}
    s = training_summary(history, best_epoch=1, monitor="val_loss", best_monitored_loss=1.5,
                         stopped_early=True, intensity_scale_initial=2, intensity_scale_trained=2.5)
    assert s == {"epochs_run": 3, "best_epoch": 1, "monitor": "val_loss",
                 "best_monitored_loss": 1.5, "stopped_early": True,
                 "final": {"train_loss": 1.0, "val_loss": 1.5, "train_nll_full": None,
                           "val_nll_full": None},
                 "intensity_scale_initial": 2.0, "intensity_scale_trained": 2.5}
    none = training_summary({"epoch": []}, best_epoch=-1, monitor="train_loss",
                            best_monitored_loss=float("nan"), stopped_early=False,
                            intensity_scale_initial=1, intensity_scale_trained=1)
    assert none["best_epoch"] is None and none["best_monitored_loss"] is None
    assert none["epochs_run"] == 0
