""""Until convergence": the smoothed rule does not end a round on a noisy loss that is still falling, does
end it on a flat one, and the loop records each round's train loss and labeled-set accuracy."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest

from lightning_dynamical import ActiveLearningLoop, Classifier, Convergence, Random
from lightning_dynamical.convergence import near_chance_warning
from lightning_dynamical.models import DigitsCNN
from tests.tiny import digits_datamodule, fit_loop, read_csv

FALLING_UNTIL = 60
"""Up to this epoch the noiseless loss below still falls by more than 1% per epoch."""


def noisy_falling(seed: int, epochs: int = 200, noise: float = 0.03) -> list[float]:
    """An augmented-looking epoch loss: ``0.5 + 1.5 exp(-t/40)`` plus Gaussian noise."""
    t = np.arange(epochs)
    return (0.5 + 1.5 * np.exp(-t / 40) + np.random.default_rng(seed).normal(0, noise, epochs)).tolist()


def stop_epoch(rule: Convergence, losses: list[float]) -> int:
    rule.reset()
    for loss in losses:
        if rule.update(loss):
            return rule.epochs
    return len(losses)


def test_still_falling_noisy_loss_does_not_end_the_round():
    raw = Convergence(patience=5, min_delta=1e-3, max_epochs=200, smoothing=1, rel_delta=0.0)
    smoothed = Convergence(patience=5, min_delta=1e-3, max_epochs=200)
    raw_stops = [stop_epoch(raw, noisy_falling(seed)) for seed in range(20)]
    smoothed_stops = [stop_epoch(smoothed, noisy_falling(seed)) for seed in range(20)]
    assert sum(s < FALLING_UNTIL for s in raw_stops) >= 3  # the raw rule stops by chance while falling
    assert min(smoothed_stops) >= FALLING_UNTIL
    assert all(s < 200 for s in smoothed_stops)  # and still ends once the loss flattens


def test_flat_noisy_loss_ends_the_round():
    rule = Convergence(patience=5, max_epochs=200)
    for seed in range(20):
        flat = (0.8 + np.random.default_rng(seed).normal(0, 0.03, 200)).tolist()
        assert stop_epoch(rule, flat) <= 40
        assert "plateaued" in rule.reason and "mean of 5 epochs" in rule.reason


def test_smoothing_one_is_the_raw_rule():
    rule = Convergence(patience=2, min_delta=0.1, smoothing=1, rel_delta=0.0)
    assert [rule.update(v) for v in (1.0, 0.95, 0.92)] == [False, False, True]


def test_relative_tolerance_scales_with_the_loss():
    rule = Convergence(patience=2, min_delta=0.0, smoothing=1, rel_delta=0.1)
    assert [rule.update(v) for v in (1e-3, 0.95e-3, 0.92e-3)] == [False, False, True]


def test_state_round_trip_mid_round():
    losses = noisy_falling(3)[:12]
    a = Convergence(patience=3)
    for v in losses[:7]:
        a.update(v)
    b = Convergence(patience=3)
    b.load_state_dict(a.state_dict())
    assert [a.update(v) for v in losses[7:]] == [b.update(v) for v in losses[7:]]
    assert a.smoothed == b.smoothed


@pytest.mark.parametrize("kwargs, match", [({"smoothing": 0}, "smoothing"), ({"rel_delta": 1.0}, "rel_delta"),
                                           ({"max_epochs": 0}, "max_epochs_per_round"),
                                           ({"min_epochs": 9, "max_epochs": 5}, "min_epochs_per_round")])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Convergence(**kwargs)


def test_near_chance_warning_names_round_and_reason():
    text = near_chance_warning(3, 0.12, 10, "train loss plateaued at 2.2400")
    assert text is not None and "Round 3" in text and "1/10" in text and "plateaued at 2.2400" in text
    assert near_chance_warning(3, 0.5, 10, "x") is None
    assert near_chance_warning(0, 0.52, 2, "x") is not None


class ScriptedLoss(Classifier):
    """Reports a scripted noisy falling loss per epoch (the network never learns: zero gradient)."""

    def __init__(self, losses: list[float]) -> None:
        super().__init__(DigitsCNN())
        self.losses = losses

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).sum() * 0.0 + self.losses[self.current_epoch]


def _round0_epochs(tmp_path, **kwargs) -> tuple[int, list[dict[str, str]]]:
    L.seed_everything(0)
    dm = digits_datamodule(batch_size=40)
    loop = ActiveLearningLoop(Random(), query_size=10, rounds=1, patience=5, max_epochs_per_round=150,
                              dirpath=str(tmp_path), verbose=False, save_round_checkpoints=False, **kwargs)
    fit_loop(ScriptedLoss(noisy_falling(seed=8, epochs=400)), dm, loop, tmp_path)
    return loop.history[0]["epochs"], read_csv(tmp_path / "al_rounds.csv")


def test_loop_trains_on_while_a_noisy_loss_falls_and_warns_near_chance(tmp_path, one_thread):
    raw_epochs, _ = _round0_epochs(tmp_path / "raw", smoothing=1, rel_delta=0.0)
    with pytest.warns(UserWarning, match=r"Round 0 ended with accuracy .* of chance \(1/10 .*plateaued"):
        epochs, rows = _round0_epochs(tmp_path / "smoothed")
    losses = noisy_falling(8, 400)
    assert raw_epochs == stop_epoch(Convergence(5, max_epochs=150, smoothing=1, rel_delta=0.0), losses) < FALLING_UNTIL
    assert epochs == stop_epoch(Convergence(5, max_epochs=150), losses) >= FALLING_UNTIL
    assert float(rows[0]["train_loss"]) == pytest.approx(losses[epochs - 1], rel=1e-6)
    assert 0 <= float(rows[0]["train_acc"]) <= 0.15 and not math.isnan(float(rows[1]["train_loss"]))
