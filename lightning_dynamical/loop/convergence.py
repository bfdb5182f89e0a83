""""Train until convergence" for one active-learning round."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_dynamical.errors import (
    ConfigError,
    check_fraction,
    check_int_between,
    check_non_negative,
    check_positive_int,
)
from lightning_dynamical.records.migrate import migrate_convergence_state


class Convergence:
    """Decides when a round's training has converged: the labeled set is fit, and the loss has settled.

    The paper trains "until convergence" before every query; its score assumes it (a labeled set whose summed
    gradient ``G_S`` is still large makes the ``2 g . G_S`` term choose). A round ends at the first epoch, after
    ``min_epochs``, at which both hold:

    - **fit**: accuracy on the labeled set (eval mode) has been ``>= accuracy_threshold`` at each of the last
      ``fit_epochs`` epochs (one lucky epoch never ends a round; ``accuracy_threshold=None`` skips this test);
    - **settled**: the smoothed loss (mean epoch loss of the last ``smoothing`` epochs) is at most
      ``loss_target``, or it has not improved on its best by more than ``max(min_delta, rel_delta * best)``
      for ``patience`` epochs (a relative plateau: scale-free, so it judges losses near 0.003 as well as 2.3).

    A round that reaches ``max_epochs`` first ends there, and :attr:`capped` says it did not converge. The
    default ``loss_target=0.01`` is a mean cross-entropy at which the labeled samples' true-class
    probabilities have a geometric mean of 0.99: their gradients, and so ``G_S``, are about 1% of their size at
    the round's start. ``accuracy_threshold=None, loss_target=None, smoothing=1, rel_delta=0`` is the raw-loss
    plateau of earlier versions.

    Args:
        patience: epochs without a counted improvement of the smoothed loss that make a plateau.
        min_delta: absolute improvement that counts (0: relative only).
        accuracy_threshold: the labeled-set accuracy the fit test asks for (``None``: no fit test).
        max_epochs: cap on epochs per round.
        min_epochs: floor on epochs per round.
        smoothing: epochs averaged into the smoothed loss (the settled test starts once there are this many).
        rel_delta: improvement that counts, relative to the best smoothed loss.
        fit_epochs: consecutive epochs the accuracy must hold.
        loss_target: a smoothed loss at or below this counts as settled (``None``: plateau only).

    Raises:
        ConfigError: an argument out of range (named as the loop's argument).

    Example::

        Convergence(accuracy_threshold=0.99, fit_epochs=5, loss_target=0.01, rel_delta=0.05, patience=5)
    """

    def __init__(
        self,
        patience: int = 5,
        min_delta: float = 0.0,
        accuracy_threshold: float | None = 0.99,
        max_epochs: int = 100,
        min_epochs: int = 1,
        smoothing: int = 5,
        rel_delta: float = 0.05,
        fit_epochs: int = 5,
        loss_target: float | None = 0.01,
    ) -> None:
        check_positive_int("patience", patience)
        check_non_negative("min_delta", min_delta)
        check_fraction("train_acc_threshold", accuracy_threshold)
        check_positive_int("max_epochs_per_round", max_epochs)
        check_int_between("min_epochs_per_round", min_epochs, 1, max_epochs, "max_epochs_per_round")
        check_positive_int("smoothing", smoothing)
        check_positive_int("fit_epochs", fit_epochs)
        if loss_target is not None:
            check_non_negative("loss_target", loss_target)
        if not 0 <= rel_delta < 1:
            raise ConfigError(f"rel_delta must be in [0, 1), got {rel_delta}")
        self.patience = patience
        self.min_delta = min_delta
        self.accuracy_threshold = accuracy_threshold
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.smoothing = smoothing
        self.rel_delta = rel_delta
        self.fit_epochs = fit_epochs
        self.loss_target = loss_target
        self.reset()

    def reset(self) -> None:
        """Start a new round."""
        self.epochs = 0
        self.best = math.inf
        self.wait = 0
        self.fit_streak = 0
        self.reason = ""
        self.ended_by = ""
        self.last_loss = math.nan
        self.last_accuracy = math.nan
        self._recent: deque[float] = deque(maxlen=self.smoothing)

    @property
    def smoothed(self) -> float:
        """Mean loss of the last ``smoothing`` epochs (NaN until there are that many)."""
        return sum(self._recent) / len(self._recent) if len(self._recent) == self.smoothing else math.nan

    @property
    def capped(self) -> bool:
        """The round ended at ``max_epochs`` without converging."""
        return self.ended_by == "max_epochs"

    @property
    def is_fit(self) -> bool:
        return self.accuracy_threshold is None or self.fit_streak >= self.fit_epochs

    def _settled(self) -> str:
        """``"loss_target"`` or ``"plateau"`` when the smoothed loss has settled, else ``""``."""
        smoothed = self.smoothed
        if math.isnan(smoothed):
            return ""
        if self.loss_target is not None and smoothed <= self.loss_target:
            return "loss_target"
        return "plateau" if self.wait >= self.patience else ""

    def update(self, loss: float, accuracy: float | None = None) -> bool:
        """Record one epoch's mean training loss and (with a fit test) labeled-set accuracy; True when the round
        has ended (``reason`` says why in words, ``ended_by`` as a code: ``loss_target``, ``plateau`` or
        ``max_epochs``)."""
        self.epochs += 1
        self.last_loss = loss
        self._recent.append(loss)
        if accuracy is not None:
            self.last_accuracy = accuracy
            thr = self.accuracy_threshold
            self.fit_streak = self.fit_streak + 1 if thr is not None and accuracy >= thr else 0
        smoothed = self.smoothed
        if not math.isnan(smoothed):
            needed = max(self.min_delta, self.rel_delta * abs(self.best)) if math.isfinite(self.best) else 0.0
            if smoothed < self.best - needed:
                self.best = smoothed
                self.wait = 0
            else:
                self.wait += 1
        settled = self._settled()
        self.ended_by = ""
        if self.epochs >= self.min_epochs and settled and self.is_fit:
            self.ended_by = settled
        elif self.epochs >= self.max_epochs:
            self.ended_by = "max_epochs"
        self.reason = self._describe()
        return bool(self.ended_by)

    def figure(self) -> float:
        """The round's convergence figure for ``al_rounds.csv``: the smoothed training loss at its end."""
        return self.smoothed if not math.isnan(self.smoothed) else self.last_loss

    def _describe(self) -> str:
        if self.ended_by == "loss_target":
            return f"converged: smoothed train loss {self.smoothed:.4g} <= loss_target {self.loss_target}{self._fit()}"
        if self.ended_by == "plateau":
            return (f"converged: train loss plateaued at {self.best:.4g} (mean of {self.smoothing} epochs; no "
                    f"{self.rel_delta:.1%} improvement for {self.patience} epochs){self._fit()}")
        if self.ended_by == "max_epochs":
            return f"reached max_epochs_per_round={self.max_epochs} before converging"
        return ""

    def _fit(self) -> str:
        if self.accuracy_threshold is None:
            return ""
        return f", labeled-set accuracy >= {self.accuracy_threshold} for {self.fit_streak} epochs"

    def shortfall(self) -> str:
        """What was still missing, in words (for the capped-round warning)."""
        missing = []
        if not self.is_fit:
            missing.append(f"labeled-set accuracy {self.last_accuracy:.4f} held >= {self.accuracy_threshold} for "
                           f"{self.fit_streak} of {self.fit_epochs} epochs")
        if not self._settled():
            target = f"loss_target {self.loss_target}, " if self.loss_target is not None else ""
            missing.append(f"smoothed train loss {self.figure():.4g} ({target}last {self.rel_delta:.1%} improvement "
                           f"{self.wait} epochs ago, patience {self.patience})")
        return "; ".join(missing)

    def capped_warning(self, round_index: int) -> str:
        return (f"Round {round_index} ended at max_epochs_per_round={self.max_epochs} before training converged: "
                f"{self.shortfall()}. Its query comes from a model that has not converged on the labeled set; "
                "raise max_epochs_per_round or check the learning rate")

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best": self.best, "wait": self.wait, "recent": list(self._recent),
                "last_loss": self.last_loss, "reason": self.reason, "fit_streak": self.fit_streak,
                "ended_by": self.ended_by, "last_accuracy": self.last_accuracy}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`'s output, or an earlier version's (migrated by
        :func:`~lightning_dynamical.records.migrate.migrate_convergence_state`); ``None`` (nothing saved) starts the
        round afresh."""
        if state is None:
            return self.reset()
        state = migrate_convergence_state(state)
        self.epochs = int(state["epochs"])
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self._recent = deque((float(v) for v in state["recent"]), maxlen=self.smoothing)
        self.last_loss = float(state["last_loss"])
        self.reason = str(state["reason"])
        self.fit_streak = int(state["fit_streak"])
        self.ended_by = str(state["ended_by"])
        self.last_accuracy = float(state["last_accuracy"])

    def check_max_epochs(self, trainer_max_epochs: int | None, rounds: int) -> None:
        """Warn when ``Trainer(max_epochs=...)`` may end the run before ``rounds`` rounds can finish."""
        needed = (rounds + 1) * self.max_epochs
        if trainer_max_epochs is not None and 0 <= trainer_max_epochs < needed:
            rank_zero_warn(f"Trainer(max_epochs={trainer_max_epochs}) may stop before all {rounds} rounds finish "
                           f"(up to {needed} epochs); use max_epochs=-1")


NEAR_CHANCE_POINTS = 0.05
"""A round whose labeled-set accuracy is within this of chance (1 / classes) gets a warning."""


def near_chance_warning(round_index: int, accuracy: float, num_classes: int, reason: str) -> str | None:
    """A warning when a round ends with training accuracy near chance, else ``None``.

    Such a round queries with a model that has not learned the labeled set yet, which no strategy can use.
    """
    if num_classes < 2 or math.isnan(accuracy):
        return None
    chance = 1.0 / num_classes
    if accuracy > chance + NEAR_CHANCE_POINTS:
        return None
    return (f"Round {round_index} ended with accuracy {accuracy:.4f} on the labeled set, within "
            f"{NEAR_CHANCE_POINTS:.2f} of chance (1/{num_classes} = {chance:.4f}); training stopped because "
            f"{reason or 'the round ended'}. The query will come from an untrained model: raise "
            "max_epochs_per_round or patience, or check the learning rate")


class EpochLoss:
    """The sample-weighted mean training loss of an epoch, from the outputs of ``training_step``.

    Sums stay on the loss's device in float64 (one transfer per epoch); :meth:`compute` sums them over ranks with the
    ``reduce`` it is given (the trainer's strategy). Under automatic optimization Lightning hands
    ``on_train_batch_end`` the loss divided by ``accumulate_grad_batches`` (the scaling it backpropagates); pass that
    factor as ``accumulate`` to record the loss ``training_step`` returned.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start an epoch."""
        self._total: Tensor | None = None
        self._samples = 0
        self.losses = 0
        self.batches = 0

    def update(self, outputs: Any, samples: int, accumulate: int = 1) -> None:
        """Add a batch's loss (``outputs`` or ``outputs["loss"]``, times ``accumulate``; other outputs are ignored, and
        a step that returned no loss, as Lightning allows to skip a batch, adds none)."""
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"accumulate must be the int accumulate_grad_batches (>= 1), got {accumulate!r}")
        self.batches += 1
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, Tensor):
            value = loss.detach().to(_accumulator(loss.device)) * (accumulate * samples)
            self._total = value if self._total is None else self._total + value
            self._samples += samples
            self.losses += 1

    def compute(self, reduce: Callable[[Tensor], Tensor] | None = None, device: torch.device | None = None) -> float:
        """The epoch's mean loss over every rank (``reduce`` sums a tensor over them, on ``device`` where this rank
        saw no loss; ``inf`` without any batch), and start the next epoch. A :class:`ConfigError` when batches ran
        but none returned a loss."""
        total = self._total if self._total is not None else torch.zeros((), dtype=_accumulator(device), device=device)
        sums = torch.cat([total.reshape(1), total.new_tensor([self._samples, self.losses, self.batches])])
        total_value, samples, losses, batches = (reduce(sums) if reduce is not None else sums).tolist()
        self.reset()
        if not losses:
            if batches:
                raise ConfigError(f"training_step returned no loss in any of the epoch's {int(batches)} batches: "
                                  "ActiveLearningLoop ends rounds by the training loss, so return it from "
                                  "training_step (under manual optimization too: `return loss`)")
            return math.inf
        return total_value / samples


def _accumulator(device: torch.device | None) -> torch.dtype:
    """The dtype of the epoch's loss sums: float64, float32 on MPS (which has no float64)."""
    return torch.float32 if device is not None and device.type == "mps" else torch.float64
