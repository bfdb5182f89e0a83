""""Train until convergence" for one active-learning round."""

from __future__ import annotations

import math
from typing import Any

from lightning_dynamical.errors import check_fraction, check_int_between, check_non_negative, check_positive_int


class Convergence:
    """Decides when a round's training has converged.

    A round ends when the epoch-mean training loss has not improved by ``min_delta`` for ``patience``
    epochs, or (if set) when training accuracy on the labeled set reaches ``accuracy_threshold``; and
    always after ``max_epochs`` epochs. At least ``min_epochs`` epochs are trained.
    """

    def __init__(
        self,
        patience: int = 5,
        min_delta: float = 1e-3,
        accuracy_threshold: float | None = None,
        max_epochs: int = 50,
        min_epochs: int = 1,
    ) -> None:
        check_positive_int("patience", patience)
        check_non_negative("min_delta", min_delta)
        check_fraction("accuracy_threshold", accuracy_threshold)
        check_positive_int("max_epochs", max_epochs)
        check_int_between("min_epochs", min_epochs, 1, max_epochs, "max_epochs")
        self.patience = patience
        self.min_delta = min_delta
        self.accuracy_threshold = accuracy_threshold
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.reset()

    def reset(self) -> None:
        """Start a new round."""
        self.epochs = 0
        self.best = math.inf
        self.wait = 0
        self.reason = ""

    def update(self, loss: float, accuracy: float | None = None) -> bool:
        """Record one epoch; True when the round has converged (``reason`` says why)."""
        self.epochs += 1
        if loss < self.best - self.min_delta:
            self.best = loss
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
            self.reason = f"train loss plateaued at {self.best:.4f} for {self.patience} epochs"
        else:
            self.reason = ""
        return bool(self.reason)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = int(state["epochs"])
        self.best = float(state["best"])
        self.wait = int(state["wait"])
