""""Until convergence": the smoothed rule does not end a round on a noisy loss that is still falling, does
end it on a flat one, and the loop records each round's train loss and labeled-set accuracy. Each part of the rule
(window, patience, min_delta and rel_delta, accuracy threshold, min and max epochs, state) on scripted losses."""

from __future__ import annotations

import json
import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch

from lightning_dynamical import ActiveLearningLoop, Classifier, Convergence, DynamicAL, Random
from lightning_dynamical.loop.convergence import EpochLoss, near_chance_warning
from lightning_dynamical.models import DigitsCNN
from tests.helpers.tiny import digits_datamodule, fit_loop, read_csv

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


def loss_only(**kwargs) -> Convergence:
    """The plateau test alone: no fit test, no loss target (the rule of earlier versions, with its tolerances)."""
    return Convergence(**{"accuracy_threshold": None, "loss_target": None, "min_delta": 1e-3, "rel_delta": 1e-3,
                          **kwargs})


def test_still_falling_noisy_loss_does_not_end_the_round():
    raw = loss_only(patience=5, max_epochs=200, smoothing=1, rel_delta=0.0)
    smoothed = loss_only(patience=5, max_epochs=200)
    raw_stops = [stop_epoch(raw, noisy_falling(seed)) for seed in range(20)]
    smoothed_stops = [stop_epoch(smoothed, noisy_falling(seed)) for seed in range(20)]
    assert sum(s < FALLING_UNTIL for s in raw_stops) >= 3  # the raw rule stops by chance while falling
    assert min(smoothed_stops) >= FALLING_UNTIL
    assert all(s < 200 for s in smoothed_stops)  # and still ends once the loss flattens


def test_default_rule_never_ends_a_round_while_the_loss_falls_at_any_scale():
    """The defaults (5% relative plateau, no absolute tolerance) on clean exponential decays from 2.3 and from
    0.003 (a loss near 0 that halves every 10 epochs): no end while it halves, whatever its size."""
    for start in (2.3, 3e-3):
        rule = Convergence(loss_target=None, max_epochs=80)
        losses = [start * 0.5 ** (e / 10) for e in range(80)]
        assert stop_epoch(rule, losses) == 80 and rule.capped  # the accuracy is never asked for: no fit, no end
        rule = Convergence(loss_target=None, max_epochs=80)
        ended = [rule.update(loss, 1.0) for loss in losses]
        assert not any(ended[:-1]) and rule.ended_by == "max_epochs"


def test_the_old_absolute_tolerance_misjudged_small_losses():
    """min_delta=1e-3 calls a loss falling from 0.003 by half every 10 epochs a plateau; the default does not."""
    losses = [3e-3 * 0.5 ** (e / 10) for e in range(60)]
    assert stop_epoch(loss_only(patience=5, min_delta=1e-3), losses) == 10
    assert stop_epoch(Convergence(accuracy_threshold=None, loss_target=None, max_epochs=60), losses) == 60


def test_flat_noisy_loss_ends_the_round():
    rule = Convergence(patience=5, max_epochs=200, accuracy_threshold=None, loss_target=None)
    for seed in range(20):
        flat = (0.8 + np.random.default_rng(seed).normal(0, 0.03, 200)).tolist()
        assert stop_epoch(rule, flat) <= 40
        assert rule.ended_by == "plateau" and "plateaued" in rule.reason and "mean of 5 epochs" in rule.reason


def test_smoothing_one_is_the_raw_rule():
    rule = loss_only(patience=2, min_delta=0.1, smoothing=1, rel_delta=0.0)
    assert [rule.update(v) for v in (1.0, 0.95, 0.92)] == [False, False, True]


def test_relative_tolerance_scales_with_the_loss():
    rule = loss_only(patience=2, min_delta=0.0, smoothing=1, rel_delta=0.1)
    assert [rule.update(v) for v in (1e-3, 0.95e-3, 0.92e-3)] == [False, False, True]


def test_loss_target_ends_a_fit_round_while_the_loss_still_falls():
    rule = Convergence(fit_epochs=3, loss_target=0.01, smoothing=2, max_epochs=100)
    losses = [0.05 * 0.8 ** e for e in range(100)]
    first = next(e + 1 for e, loss in enumerate(losses) if rule.update(loss, 1.0))
    assert rule.ended_by == "loss_target" and "<= loss_target 0.01" in rule.reason
    assert (losses[first - 1] + losses[first - 2]) / 2 <= 0.01 < (losses[first - 2] + losses[first - 3]) / 2
    assert rule.figure() == pytest.approx((losses[first - 1] + losses[first - 2]) / 2)


def test_accuracy_must_hold_for_fit_epochs_in_a_row():
    """One epoch at the threshold never ends a round; a dip restarts the count; the loss must also have settled."""
    rule = Convergence(accuracy_threshold=0.9, fit_epochs=3, loss_target=0.5, smoothing=1, max_epochs=20)
    accs = [0.95, 0.5, 0.95, 0.95, 0.7, 0.91, 0.92, 0.93]
    assert [rule.update(0.1, a) for a in accs] == [False] * 7 + [True]
    assert rule.fit_streak == 3 and rule.ended_by == "loss_target"
    assert "accuracy >= 0.9 for 3 epochs" in rule.reason
    unsettled = Convergence(accuracy_threshold=0.9, fit_epochs=2, loss_target=0.01, smoothing=1, max_epochs=30)
    assert not any(unsettled.update(1.0 / (e + 1), 1.0) for e in range(29))  # fit, but the loss still falls


def test_accuracy_is_needed_when_a_threshold_is_set():
    rule = Convergence(accuracy_threshold=0.9, fit_epochs=1, smoothing=1, max_epochs=10)
    assert not any(rule.update(1e-4) for _ in range(9))  # no accuracy given: not fit
    assert rule.update(1e-4, 0.95) and rule.ended_by == "loss_target"


def test_min_epochs_holds_off_a_converged_round_and_max_epochs_ends_any_round():
    def stops(**kwargs) -> tuple[int, str]:
        rule = loss_only(patience=1, smoothing=1, rel_delta=0.0, **kwargs)
        return stop_epoch(rule, [1.0] * 20), rule.reason

    assert stops()[0] == 2
    assert stops(min_epochs=5)[0] == 5
    falling = Convergence(patience=1, max_epochs=4, smoothing=1, accuracy_threshold=0.5)
    assert [falling.update(1.0 / (e + 1), 0.1) for e in range(4)] == [False, False, False, True]
    assert falling.capped and falling.reason.startswith("reached max_epochs_per_round=4 before converging")
    assert "accuracy 0.1000 held >= 0.5 for 0 of 5 epochs" in falling.capped_warning(0)


def test_a_round_converged_at_the_cap_is_converged():
    rule = Convergence(max_epochs=3, accuracy_threshold=0.5, fit_epochs=1, smoothing=1, loss_target=0.1)
    assert [rule.update(0.01, 1.0 if e == 2 else 0.0) for e in range(3)] == [False, False, True]
    assert rule.ended_by == "loss_target" and not rule.capped


def test_capped_warning_names_the_round_and_the_figure():
    rule = Convergence(max_epochs=6, smoothing=2, fit_epochs=2)
    for e in range(6):
        rule.update(0.5 / (e + 1), 1.0)
    text = rule.capped_warning(3)
    assert text.startswith("Round 3 ended at max_epochs_per_round=6 before training converged")
    assert f"smoothed train loss {rule.figure():.4g} (loss_target 0.01" in text and "accuracy" not in text


@pytest.mark.parametrize("kwargs, match", [
    ({"smoothing": 0}, r"^smoothing must be a positive int \(>= 1\), got 0$"),
    ({"rel_delta": 1.0}, r"^rel_delta must be in \[0, 1\), got 1.0$"),
    ({"rel_delta": -0.1}, "rel_delta"),
    ({"rel_delta": math.nan}, "rel_delta"),
    ({"patience": 0}, r"^patience must be a positive int \(>= 1\), got 0$"),
    ({"min_delta": -1e-3}, r"^min_delta must be a number >= 0, got -0.001$"),
    ({"accuracy_threshold": 0.0}, r"^train_acc_threshold must be null or a number in \(0, 1\], got 0.0$"),
    ({"accuracy_threshold": 1.5}, "train_acc_threshold"),
    ({"max_epochs": 0}, r"^max_epochs_per_round must be a positive int \(>= 1\), got 0$"),
    ({"min_epochs": 9, "max_epochs": 5}, r"^min_epochs_per_round must be an int from 1 to max_epochs_per_round \(5\)"),
    ({"min_epochs": 0}, "min_epochs_per_round"),
    ({"fit_epochs": 0}, r"^fit_epochs must be a positive int \(>= 1\), got 0$"),
    ({"loss_target": -1.0}, r"^loss_target must be a number >= 0, got -1.0$"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Convergence(**kwargs)


@pytest.mark.parametrize("smoothing, patience", [(1, 1), (3, 1), (5, 2)])
def test_a_flat_loss_ends_the_round_once_the_window_is_full_and_patience_runs_out(smoothing, patience):
    """The first full window sets the best loss; each later epoch without improvement adds one to ``wait``."""
    rule = loss_only(patience=patience, smoothing=smoothing, max_epochs=50)
    assert stop_epoch(rule, [1.0] * 50) == smoothing + patience
    assert rule.reason == (f"converged: train loss plateaued at 1 (mean of {smoothing} epochs; no 0.1% "
                           f"improvement for {patience} epochs)")


def test_smoothed_is_the_mean_of_the_last_window_and_nan_before():
    rule = Convergence(smoothing=3)
    smoothed = []
    for loss in (3.0, 1.0, 2.0, 6.0):
        rule.update(loss)
        smoothed.append(rule.smoothed)
    assert math.isnan(smoothed[0]) and math.isnan(smoothed[1]) and smoothed[2:] == [2.0, 3.0]
    assert rule.last_loss == 6.0 and rule.best == 2.0 and rule.wait == 1


def test_an_improvement_counts_only_beyond_the_larger_of_min_delta_and_rel_delta():
    def stops_after(first: float, second: float) -> bool:
        rule = loss_only(patience=1, min_delta=0.5, smoothing=1, rel_delta=0.1)
        return [rule.update(first), rule.update(second)] == [False, True]

    assert stops_after(10.0, 9.2)  # 0.8 < rel_delta * 10 = 1.0
    assert not stops_after(10.0, 8.9)
    assert stops_after(1.0, 0.6)  # 0.4 < min_delta = 0.5 (rel_delta * 1 = 0.1)
    assert not stops_after(1.0, 0.4)
    assert stops_after(1.0, 0.5)  # exactly min_delta is not an improvement


def test_reset_starts_a_new_round():
    rule = loss_only(patience=1, smoothing=2, max_epochs=50)
    stop_epoch(rule, [1.0] * 50)
    rule.reset()
    assert (rule.epochs, rule.best, rule.wait, rule.reason, rule.fit_streak, rule.ended_by) == (0, math.inf, 0, "",
                                                                                                 0, "")
    assert math.isnan(rule.smoothed) and math.isnan(rule.last_loss)
    assert [rule.update(v) for v in (5.0, 5.0, 5.0)] == [False, False, True]  # window refills before it can end


def test_state_round_trip_mid_round_keeps_the_fit_streak():
    losses = noisy_falling(3)[:12]
    accs = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 1.0, 1.0, 1.0, 1.0]
    a = Convergence(patience=3, fit_epochs=3, loss_target=0.6)
    for v, acc in zip(losses[:7], accs[:7]):
        a.update(v, acc)
    b = Convergence(patience=3, fit_epochs=3, loss_target=0.6)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.fit_streak == a.fit_streak == 6
    assert [a.update(v, c) for v, c in zip(losses[7:], accs[7:])] == [b.update(v, c) for v, c in zip(losses[7:],
                                                                                                  accs[7:])]
    assert a.smoothed == b.smoothed and a.state_dict() == b.state_dict()


def test_state_is_plain_and_older_states_still_load():
    rule = Convergence(patience=3, smoothing=2)
    for v in noisy_falling(1)[:6]:
        rule.update(v, 1.0)
    state = rule.state_dict()
    restored = Convergence(patience=3, smoothing=2)
    restored.load_state_dict(json.loads(json.dumps(state)))
    assert restored.state_dict() == state
    old = loss_only(patience=3, smoothing=2)
    old.load_state_dict({"epochs": 4, "best": 0.5, "wait": 1})
    # An older state's best was a raw loss, not comparable with a smoothed one: the plateau test starts over
    # (the window of 2 refills, then 3 epochs of patience); the epoch count is kept for the per-round cap.
    assert (old.epochs, old.best, old.wait, old.reason) == (4, math.inf, 0, "") and math.isnan(old.last_loss)
    assert [old.update(0.6) for _ in range(5)] == [False, False, False, False, True]
    v1 = Convergence(fit_epochs=2, loss_target=1.0, smoothing=2)  # saved before the fit test existed
    v1.load_state_dict({"epochs": 3, "best": 0.5, "wait": 0, "recent": [0.5, 0.5], "last_loss": 0.5, "reason": ""})
    assert v1.fit_streak == 0 and [v1.update(0.5, 1.0) for _ in range(2)] == [False, True]


def test_trainer_max_epochs_too_small_for_the_rounds_warns():
    rule = Convergence(max_epochs=10)
    with pytest.warns(UserWarning, match=r"Trainer\(max_epochs=20\) may stop before all 2 rounds finish \(up to 30"):
        rule.check_max_epochs(20, rounds=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for enough in (-1, None, 30):
            rule.check_max_epochs(enough, rounds=2)


def test_epoch_loss_is_the_sample_weighted_mean_of_the_batches():
    epoch = EpochLoss()
    epoch.update(torch.tensor(1.0), samples=3)
    epoch.update({"loss": torch.tensor(5.0), "logits": torch.zeros(1)}, samples=1)
    epoch.update(None, samples=7)  # a step that returned nothing
    assert epoch.compute() == 2.0
    assert epoch.compute() == math.inf  # compute starts the next epoch; an epoch without batches has no loss


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
    kwargs = {"train_acc_threshold": None, "loss_target": None, "min_delta": 1e-3, "rel_delta": 1e-3, **kwargs}
    loop = ActiveLearningLoop(Random(), query_size=10, rounds=1, patience=5, max_epochs_per_round=150,
                              dirpath=str(tmp_path), verbose=False, save_round_checkpoints=False, **kwargs)
    fit_loop(ScriptedLoss(noisy_falling(seed=8, epochs=400)), dm, loop, tmp_path)
    return loop.history[0]["epochs"], read_csv(tmp_path / "al_rounds.csv")


def test_loop_trains_on_while_a_noisy_loss_falls_and_warns_near_chance(tmp_path, one_thread):
    raw_epochs, _ = _round0_epochs(tmp_path / "raw", smoothing=1, rel_delta=0.0)
    with pytest.warns(UserWarning, match=r"Round 0 ended with accuracy .* of chance \(1/10 .*plateaued"):
        epochs, rows = _round0_epochs(tmp_path / "smoothed")
    losses = noisy_falling(8, 400)
    assert raw_epochs == stop_epoch(loss_only(patience=5, max_epochs=150, smoothing=1, rel_delta=0.0),
                                    losses) < FALLING_UNTIL
    assert epochs == stop_epoch(loss_only(patience=5, max_epochs=150), losses) >= FALLING_UNTIL
    assert float(rows[0]["train_loss"]) == pytest.approx(losses[epochs - 1], rel=1e-6)
    assert 0 <= float(rows[0]["train_acc"]) <= 0.15 and not math.isnan(float(rows[1]["train_loss"]))


def test_default_rule_on_real_training_records_why_each_round_ended_and_the_query_regime(tmp_path, one_thread):
    """Digits with the loop's defaults: every round trains until the rule says converged (no round of a few
    epochs), ``al_rounds.csv`` names the reason and the smoothed loss, and each dynamicAL query's regime is
    recorded (the last round, which queries nothing, has none)."""
    L.seed_everything(0)
    dm = digits_datamodule(initial_size=60)
    loop = ActiveLearningLoop(DynamicAL(), query_size=20, rounds=2, dirpath=str(tmp_path), verbose=False,
                              save_round_checkpoints=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no capped round, no near-chance round
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        fit_loop(Classifier(DigitsCNN(dropout=0.25), lr=2e-3), dm, loop, tmp_path)
    rows = read_csv(tmp_path / "al_rounds.csv")
    assert [r["converged_by"] for r in rows] and all(r["converged_by"] in ("loss_target", "plateau") for r in rows)
    assert all(int(r["epochs"]) >= 5 and float(r["train_acc"]) >= 0.99 for r in rows)
    for r, history in zip(rows, loop.history):
        assert float(r["smoothed_loss"]) == pytest.approx(history["smoothed_loss"])
        if r["converged_by"] == "loss_target":
            assert float(r["smoothed_loss"]) <= 0.01
    for r in rows[:-1]:
        sq, dot, ratio = (float(r[k]) for k in ("query_sqnorm_median", "query_dot_median", "query_dot_ratio_median"))
        assert sq > 0 and math.isfinite(dot) and math.isfinite(ratio) and 0 < float(r["query_approximation_ratio"])
    assert all(r["query_sqnorm_median"] == "nan" for r in rows[-1:])


def test_a_capped_round_warns_with_its_round_and_figure(tmp_path, one_thread):
    L.seed_everything(0)
    loop = ActiveLearningLoop(Random(), query_size=10, rounds=1, max_epochs_per_round=2, dirpath=str(tmp_path),
                              verbose=False, save_round_checkpoints=False)
    expected = (r"Round 0 ended at max_epochs_per_round=2 before training converged: labeled-set accuracy .* held "
                r">= 0.99 for \d of 5 epochs; smoothed train loss")
    with pytest.warns(UserWarning, match=expected):
        fit_loop(Classifier(DigitsCNN()), digits_datamodule(), loop, tmp_path)
    assert [r["converged_by"] for r in read_csv(tmp_path / "al_rounds.csv")] == ["max_epochs", "max_epochs"]
