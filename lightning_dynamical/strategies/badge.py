"""BADGE (Ash et al. 2020): k-means++ seeding on last-layer gradient embeddings, streamed in factored form."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.scoring.features import head_of
from lightning_dynamical.strategies.base import Reducer, Selection, Strategy, check_finite, identity
from lightning_dynamical.strategies.inference import features_and_probabilities
from lightning_dynamical.tasks.batches import LABEL_KEY
from lightning_dynamical.tasks.classification import softmax_minus_onehot


def gradient_embedding_factors(model: nn.Module, loader: Iterable[Any], progress: bool = False,
                               label_key: str = LABEL_KEY) -> tuple[Tensor, Tensor]:
    """Factors ``(a (N, C), h (N, D'))`` of the embeddings ``g_i = a_i (x) h_i``.

    ``g_i`` is the gradient of ``CE(f(x_i), argmax f(x_i))`` w.r.t. the head's weight and bias:
    ``a = softmax - onehot(argmax)`` and ``h`` the head's input, with a trailing 1 for the bias.
    """
    h, p = features_and_probabilities(model, loader, progress, label_key)
    a = softmax_minus_onehot(p, p.argmax(1)) if p.numel() else p.clone()
    if head_of(model).bias is not None:
        h = torch.cat([h, h.new_ones(h.shape[0], 1)], 1)
    return a, h


def kmeans_pp(a: Tensor, h: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding of the points ``a_i (x) h_i`` without forming them; returns ``k`` positions.

    As in BADGE's reference code, the first center is the largest-norm point, the next ones are drawn with
    probability proportional to the squared distance to the nearest chosen center. Squared distances use
    ``||a(x)h - a'(x)h'||^2 = ||a||^2 ||h||^2 + ||a'||^2 ||h'||^2 - 2 (a.a')(h.h')``, one center at a time,
    so memory is ``O(N (C + D))`` instead of ``O(N C D)``.
    """
    n = a.shape[0]
    k = min(k, n)
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    na, nh = a.pow(2).sum(1), h.pow(2).sum(1)
    chosen = torch.zeros(n, dtype=torch.bool)
    order = [int(torch.argmax(na * nh))]
    d2 = torch.full((n,), torch.inf, dtype=a.dtype)
    while True:
        c = order[-1]
        chosen[c] = True
        dist = (na * nh + na[c] * nh[c] - 2 * (a @ a[c]) * (h @ h[c])).clamp_min(0)
        d2 = torch.minimum(d2, dist).masked_fill(chosen, 0)
        if len(order) == k:
            return torch.tensor(order, dtype=torch.long)
        weights = d2 if d2.sum() > 0 else (~chosen).to(a.dtype)
        order.append(int(torch.multinomial(weights, 1, generator=generator)))


class BADGE(Strategy):
    """Batch Active learning by Diverse Gradient Embeddings.

    Embeds each pool sample as its last-layer gradient under the pseudo-label ``argmax f(x)`` (eval mode)
    and selects the batch by k-means++ seeding, trading off uncertainty (embedding norm) and diversity.
    Only the factors ``a (N, C)`` and ``h (N, D)`` are kept: memory ``O(N (C + D))``, never the
    ``(N, C * D)`` embedding matrix. The draw uses a generator seeded by ``seed`` at every call.
    ``score`` returns the embedding norms (for logging).

    Args:
        seed: seed of the k-means++ draws.
    """

    joint = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)

    def _factors(self, model: nn.Module, pool_loader: Any, progress: bool) -> tuple[Tensor, Tensor, Tensor]:
        """``(a, h, norms)``; raises on non-finite embeddings."""
        a, h = gradient_embedding_factors(model, pool_loader, progress, self.label_key)
        norms = check_finite((a.pow(2).sum(1) * h.pow(2).sum(1)).sqrt())
        return a, h, norms

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], *,
              reduce: Reducer = identity, progress: bool = False) -> Tensor:
        return self._factors(model, pool_loader, progress)[2]

    def select(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], query_size: int, *,
               reduce: Reducer = identity, progress: bool = False) -> Selection:
        a, h, norms = self._factors(model, pool_loader, progress)
        positions = kmeans_pp(a, h, query_size, torch.Generator().manual_seed(self.seed))
        return Selection.of_pool(positions, norms)
