"""The shared per-step cosine learning-rate schedule and the config fields that select it."""

import math

import pytest

from ptycho.config import ConfigError, PtychoConfig, with_overrides
from ptycho.config_bridge import to_keras_callback_kwargs, to_step_learning_rate
from ptycho.lr_schedule import cosine_learning_rate, cosine_schedule


def test_warm_up_then_half_cosine_to_the_floor():
    rates = [cosine_learning_rate(s, 10, 1e-3, 1e-5, 0.2) for s in range(12)]
    assert rates[0] == pytest.approx(5e-4) and rates[1] == pytest.approx(1e-3)   # 2 warm-up steps
    assert rates[2] == pytest.approx(1e-3)                                        # decay starts
    assert rates[9] == pytest.approx(1e-5) and rates[11] == pytest.approx(1e-5)   # last and after
    decay = rates[2:10]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    mid = cosine_learning_rate(2 + 7 / 2, 10, 1e-3, 1e-5, 0.2)
    assert mid == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert cosine_learning_rate(0, 10, 1e-3, 0.0, 0.0) == 1e-3                   # no warm-up
    assert cosine_learning_rate(0, 1, 1e-3, 1e-5, 0.0) == pytest.approx(1e-5)    # one step
    rate = cosine_schedule(10, 1e-3, 1e-5, 0.2)
    assert [rate(s) for s in range(10)] == rates[:10]


@pytest.mark.parametrize("args, message", [
    ((0, 0, 1e-3, 0.0, 0.0), "total_steps"),
    ((0, 5, 1e-3, 2e-3, 0.0), "floor <= peak"),
    ((0, 5, 1e-3, 0.0, 1.0), "warmup_fraction"),
])
def test_bad_schedule_settings(args, message):
    with pytest.raises(ValueError, match=message):
        cosine_learning_rate(*args)


def test_config_selects_the_schedule_for_both_backends():
    plateau = PtychoConfig()
    assert plateau.training.lr_schedule == "plateau"
    assert to_step_learning_rate(plateau, 100) is None
    assert "reduce_lr" in to_keras_callback_kwargs(plateau)
    cosine = with_overrides(plateau, {"training.lr_schedule": "cosine",
                                      "training.lr_warmup_fraction": 0.0,
                                      "training.min_learning_rate": 0.0})
    assert "reduce_lr" not in to_keras_callback_kwargs(cosine)
    rate = to_step_learning_rate(cosine, 100)
    assert rate(0) == pytest.approx(1e-3) and rate(99) == 0.0
    assert rate(50) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 50 / 99)))


@pytest.mark.parametrize("overrides, message", [
    ({"training.lr_schedule": "step"}, "training.lr_schedule"),
    ({"training.lr_warmup_fraction": 1.0}, "training.lr_warmup_fraction"),
    ({"training.lr_schedule": "cosine", "training.min_learning_rate": 1e-2},
     "training.min_learning_rate"),
])
def test_bad_schedule_config_is_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        with_overrides(PtychoConfig(), overrides)
