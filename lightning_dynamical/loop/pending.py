"""A query whose labels come later (people label it): kept in the loop's checkpoint until a resumed run
collects its labels."""

from __future__ import annotations

from typing import Any

from lightning_dynamical.records.queries import Query
from lightning_dynamical.reporting.console import say


class PendingQuery:
    """The paused round's query, its row and metrics; ``state`` is ``None`` when nothing is pending.

    ``state`` is a plain dict (``row``, ``metrics``, ``indices``, ``scores``, ``pseudo_labels``): it goes into
    the loop's ``state_dict`` as ``pending`` and is how older checkpoints stored it.
    """

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None

    def keep(self, row: dict[str, Any], query: Query, metrics: dict[str, float]) -> None:
        self.state = {"row": row, "metrics": metrics, "indices": list(query.indices), "scores": query.scores,
                      "pseudo_labels": query.pseudo_labels}

    def query(self, round: int) -> tuple[Query, dict[str, Any], dict[str, float]]:
        """The kept ``(query, row, metrics)`` of ``round``."""
        if self.state is None:
            raise RuntimeError("no query is pending")
        p = self.state
        return Query(round, list(p["indices"]), p["scores"], p["pseudo_labels"]), p["row"], p["metrics"]

    def announce(self, round: int, reason: Exception, checkpoint: str) -> None:
        """Say that ``round``'s labels are pending and how to resume once they are in."""
        say(f"[active learning] round {round}: labels pending ({reason}). Resume with ckpt_path={checkpoint} once "
            "they are in.")

    def state_dict(self) -> dict[str, Any] | None:
        return self.state

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.state = state

    def clear(self) -> None:
        """The labels came in: nothing is pending any more."""
        self.state = None
