""""Train until convergence" for one active-learning round."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from lightning_dynamical.errors import (
    ConfigError,
    check_fraction,
    check_int_between,
    check_non_negative,
    check_positive_int,
)
from lightning_dynamical.migrate import migrate_convergence_state


class Convergence:
    """Decides when a round's training has converged.

    The plateau test runs on a smoothed loss, the mean epoch loss over the last ``smoothing`` epochs,
    so one lucky low epoch of a noisy (augmented, dropout) loss cannot end a round while the loss is
    still falling. A round ends when the smoothed loss has not improved on its best by more than
    ``max(min_delta, rel_delta * best)`` for ``patience`` epochs, or (if set) when training accuracy on
    the labeled set reaches ``accuracy_threshold``; and always after ``max_epochs`` epochs. At least
    ``min_epochs`` epochs are trained. ``smoothing=1, rel_delta=0`` is the raw-loss rule.

    Args:
        patience: epochs without improvement of the smoothed loss that end a round.
        min_delta: absolute improvement that counts.
        accuracy_threshold: also end a round once accuracy on the labeled set reaches this.
        max_epochs: cap on epochs per round.
        min_epochs: floor on epochs per round.
        smoothing: epochs averaged into the smoothed loss (the plateau test starts once there are this many).
        rel_delta: improvement that counts, relative to the best smoothed loss (scale-free).
    """

    def __init__(
        self,
        patience: int = 5,
        min_delta: float = 1e-3,
        accuracy_threshold: float | None = None,
        max_epochs: int = 50,
        min_epochs: int = 1,
        smoothing: int = 5,
        rel_delta: float = 1e-3,
    ) -> None:
        check_positive_int("patience", patience)
        check_non_negative("min_delta", min_delta)
        check_fraction("accuracy_threshold", accuracy_threshold)
        check_positive_int("max_epochs_per_round", max_epochs)
        check_int_between("min_epochs_per_round", min_epochs, 1, max_epochs, "max_epochs_per_round")
        check_positive_int("smoothing", smoothing)
        if not 0 <= rel_delta < 1:
            raise ConfigError(f"rel_delta must be in [0, 1), got {rel_delta}")
        self.patience = patience
        self.min_delta = min_delta
        self.accuracy_threshold = accuracy_threshold
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.smoothing = smoothing
        self.rel_delta = rel_delta
        self.reset()

    def reset(self) -> None:
        """Start a new round."""
        self.epochs = 0
        self.best = math.inf
        self.wait = 0
        self.reason = ""
        self.last_loss = math.nan
        self._recent: deque[float] = deque(maxlen=self.smoothing)

    @property
    def smoothed(self) -> float:
        """Mean loss of the last ``smoothing`` epochs (NaN until there are that many)."""
        return sum(self._recent) / len(self._recent) if len(self._recent) == self.smoothing else math.nan

    def update(self, loss: float, accuracy: float | None = None) -> bool:
        """Record one epoch; True when the round has converged (``reason`` says why)."""
        self.epochs += 1
        self.last_loss = loss
        self._recent.append(loss)
        smoothed = self.smoothed
        if not math.isnan(smoothed):
            needed = max(self.min_delta, self.rel_delta * abs(self.best)) if math.isfinite(self.best) else 0.0
            if smoothed < self.best - needed:
                self.best = smoothed
                self.wait = 0
            else:
                self.wait += 1
        if self.epochs >= self.max_epochs:
            self.reason = f"reached max_epochs_per_round={self.max_epochs}"
        elif self.epochs < self.min_epochs:
            self.reason = ""
        elif self.accuracy_threshold is not None and accuracy is not None and accuracy >= self.accuracy_threshold:
            self.reason = f"train accuracy {accuracy:.4f} >= {self.accuracy_threshold}"
        elif self.wait >= self.patience:
            self.reason = (f"train loss plateaued at {self.best:.4f} (mean of {self.smoothing} epochs) for "
                           f"{self.patience} epochs")
        else:
            self.reason = ""
        return bool(self.reason)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best": self.best, "wait": self.wait, "recent": list(self._recent),
                "last_loss": self.last_loss, "reason": self.reason}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`'s output, or an earlier version's (migrated by
        :func:`~lightning_dynamical.migrate.migrate_convergence_state`); ``None`` (nothing saved) starts the round
        afresh."""
        if state is None:
            return self.reset()
        state = migrate_convergence_state(state)
        self.epochs = int(state["epochs"])
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self._recent = deque((float(v) for v in state["recent"]), maxlen=self.smoothing)
        self.last_loss = float(state["last_loss"])
        self.reason = str(state["reason"])

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

    A ``MeanMetric``, so under DDP ``compute`` reduces over ranks.
    """

    def __init__(self) -> None:
        self._mean = MeanMetric()

    def to(self, device: torch.device) -> None:
        self._mean = self._mean.to(device)

    def update(self, outputs: Any, samples: int) -> None:
        """Add a batch's loss (``outputs`` or ``outputs["loss"]``; other outputs are ignored)."""
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):
            self._mean.update(loss.detach().float().to(self._mean.device), samples)

    def compute(self) -> float:
        """The epoch's mean loss (``inf`` without any batch), and start the next epoch."""
        value = float(self._mean.compute()) if self._mean.update_count else math.inf
        self._mean.reset()
        return value
