"""Core-set (Sener & Savarese 2018): k-center greedy on penultimate features from the labeled centers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.errors import check_positive_int
from lightning_dynamical.strategies.base import (
    NonFiniteScoresError,
    Reducer,
    Selection,
    Strategy,
    check_finite,
    identity,
)
from lightning_dynamical.strategies.inference import features_and_probabilities
from lightning_dynamical.tasks.classification import Classification
from lightning_dynamical.tasks.multilabel import MultiLabel


def sq_distances(x: Tensor, y: Tensor, x_sq: Tensor | None = None) -> Tensor:
    """``(n, m)`` squared distances ``||x||^2 + ||y||^2 - 2 x.y``, clamped at 0 against round-off."""
    x_sq = x.pow(2).sum(1) if x_sq is None else x_sq
    return (x_sq[:, None] + y.pow(2).sum(1)[None] - 2 * x @ y.T).clamp_min(0)


def min_sq_distances(x: Tensor, centers: Tensor, chunk_size: int = 1024) -> Tensor:
    """``(n,)`` squared distance from each row of ``x`` to its nearest center (``inf`` without centers).

    Rows are processed ``chunk_size`` at a time, so memory is ``O(chunk_size * len(centers))``.
    """
    if centers.shape[0] == 0:
        return torch.full((x.shape[0],), torch.inf, dtype=x.dtype)
    return torch.cat([sq_distances(x[i : i + chunk_size], centers).min(1).values
                      for i in range(0, x.shape[0], chunk_size)] or [x.new_zeros(0)])


def k_center_greedy(x: Tensor, min_d2: Tensor, k: int, first: int | None = None) -> Tensor:
    """Repeatedly take the row farthest from its nearest center, then update ``min_d2`` with it.

    ``min_d2`` holds each row's squared distance to the initial centers (``inf`` where there are none);
    it is updated incrementally, one new center at a time (``O(n)`` memory). ``first`` forces the first
    pick. Ties go to the earlier row; a row is never taken twice.
    """
    k = min(k, x.shape[0])
    x_sq = x.pow(2).sum(1)
    min_d2 = min_d2.clone()
    order: list[int] = []
    for step in range(k):
        c = first if step == 0 and first is not None else int(torch.argmax(min_d2))
        order.append(c)
        min_d2 = torch.minimum(min_d2, sq_distances(x, x[c : c + 1], x_sq)[:, 0])
        min_d2[c] = -torch.inf
    return torch.tensor(order, dtype=torch.long)


class Coreset(Strategy):
    """Greedy k-center cover of the pool in the feature space of the classifier head's input.

    The labeled samples are the initial centers; each step queries the pool sample farthest from every
    center so far. Features are computed in eval mode. With an empty labeled set the first center is drawn
    uniformly with a generator seeded by ``seed``. ``score`` returns each pool sample's distance to the
    nearest labeled sample (0 without labeled samples), for logging. It reads the head's input, not its
    output, so it applies to multi-label classification too.

    Args:
        seed: seed of the first center when nothing is labeled yet.
        chunk_size: pool rows per block of the pool-to-labeled distance matrix.
    """

    joint = True
    tasks = (Classification, MultiLabel)
    why_not = ("its k-center greedy needs one feature vector per sample, and a segmentation head sees one per "
               "pixel (a token head one per token)")

    def __init__(self, seed: int = 0, chunk_size: int = 1024) -> None:
        super().__init__()
        check_positive_int("chunk_size", chunk_size)
        self.seed = int(seed)
        self.chunk_size = int(chunk_size)

    def _features(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], progress: bool
                  ) -> tuple[Tensor, Tensor, Tensor]:
        """``(pool features, squared distance to the nearest labeled sample, scores)``; non-finite raise."""
        pool = features_and_probabilities(model, pool_loader, progress, self.label_key)[0]
        labeled = features_and_probabilities(model, labeled_loader, progress, self.label_key)[0]
        if pool.shape[0]:
            check_finite(pool.abs().amax(1))
        if labeled.shape[0] and not bool(torch.isfinite(labeled).all()):  # not pool positions: none to name
            bad = int((~torch.isfinite(labeled).all(1)).sum())
            raise NonFiniteScoresError(f"{bad} of {labeled.shape[0]} labeled samples have NaN or inf features")
        min_d2 = min_sq_distances(pool, labeled, self.chunk_size)
        scores = min_d2.sqrt() if labeled.shape[0] else torch.zeros_like(min_d2)
        return pool, min_d2, scores

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], *,
              reduce: Reducer = identity, progress: bool = False) -> Tensor:
        return self._features(model, pool_loader, labeled_loader, progress)[2]

    def select(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], query_size: int, *,
               reduce: Reducer = identity, progress: bool = False) -> Selection:
        pool, min_d2, scores = self._features(model, pool_loader, labeled_loader, progress)
        first = None
        if pool.shape[0] and torch.isinf(min_d2).all():
            gen = torch.Generator().manual_seed(self.seed)
            first = int(torch.randint(pool.shape[0], (1,), generator=gen))
        return Selection.of_pool(k_center_greedy(pool, min_d2, query_size, first), scores)
