"""ptycho.history_files: history.json / history.csv / loss_curve.png of both backends."""
import csv
import json

import numpy as np
from matplotlib.image import imread

from ptycho.history_files import write_history

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
