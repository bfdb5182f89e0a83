"""The strategy contract: ``score`` the pool, ``select`` the top-b (joint strategies override ``select``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.batches import LABEL_KEY

Reducer = Callable[[Tensor], Tensor]


class NonFiniteScoresError(RuntimeError):
    """A strategy produced NaN or inf scores."""


class Strategy:
    """Base class: higher score means query first.

    ``score(model, pool_loader, labeled_loader)`` returns a CPU tensor of shape ``(len(pool_loader.dataset),)``
    aligned with the pool loader's order. ``select`` returns positions into that order. Under DDP the loop
    installs a ``reduce_sum`` (an all-reduce over ranks) that strategies use for quantities summed over the
    labeled set; single-process it is the identity. Dict batches hold their targets under ``label_key``
    (the loop sets it from the data module).
    """

    #: True where ``select`` needs the whole pool at once (joint batch selection); such strategies are
    #: run on the full pool by every rank under DDP instead of on a shard.
    joint: bool = False

    def __init__(self) -> None:
        self.reduce_sum: Reducer = _identity
        self.progress: bool = False
        self.last_scores: Tensor | None = None
        self.label_key: str = LABEL_KEY

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any]) -> Tensor:
        raise NotImplementedError

    def select(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], query_size: int) -> Tensor:
        """Top-``query_size`` positions by score; ties go to the earlier position (deterministic)."""
        scores = self.score(model, pool_loader, labeled_loader)
        return top_b(check_finite(scores), query_size)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_")
                         and k not in ("reduce_sum", "progress", "last_scores", "label_key"))
        return f"{type(self).__name__}({args})"


def _identity(t: Tensor) -> Tensor:
    return t


def check_finite(scores: Tensor) -> Tensor:
    """Raise :class:`NonFiniteScoresError` naming how many scores are NaN or inf."""
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise NonFiniteScoresError(f"{bad} of {scores.numel()} pool scores are NaN or inf")
    return scores


def top_b(scores: Tensor, query_size: int) -> Tensor:
    """Positions of the ``query_size`` largest scores, largest first, ties broken by position."""
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    return order[: min(query_size, scores.numel())]
