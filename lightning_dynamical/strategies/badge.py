"""BADGE (Ash et al. 2020): k-means++ seeding on last-layer gradient embeddings, streamed in factored form."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.scoring.common import scoring_model
from lightning_dynamical.scoring.features import features_and_logits
from lightning_dynamical.strategies.base import Reducer, Selection, Strategy, check_finite, identity
from lightning_dynamical.strategies.inference import collect, position_features_and_logits, position_head_of
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import LABEL_KEY, Inputs, evaluation
from lightning_dynamical.tasks.classification import CLASSIFICATION, Classification
from lightning_dynamical.tasks.multilabel import MultiLabel
from lightning_dynamical.tasks.positions import PerPosition
from lightning_dynamical.tasks.segmentation import Segmentation
from lightning_dynamical.tasks.tokens import TokenClassification


def gradient_embedding_factors(model: nn.Module, loader: Iterable[Any], progress: bool = False,
                               label_key: str = LABEL_KEY, task: Task = CLASSIFICATION) -> tuple[Tensor, Tensor]:
    """Factors ``(a, h)`` of the embeddings ``g_i = a_i (x) h_i``, in float64.

    ``g_i`` is the gradient of the task's loss at its pseudo targets w.r.t. the head's weight and bias. With
    ``(batch, classes)`` logits (classification, multi-label) it is rank one: ``a (N, C)`` the task's
    ``d loss / d logits`` (``softmax - onehot(argmax)`` for cross-entropy) and ``h (N, D')`` the head's input,
    with a trailing 1 for the bias. Segmentation's and token classification's loss, the mean over the ``P_i``
    labeled pixels or real tokens, gives ``g_i = sum_p a_ip (x) h_ip / P_i`` for the head applied at every position
    (a 1x1 convolution; an ``nn.Linear`` on ``(batch, tokens, features)``), of no such rank: ``a (N, C * D')`` is
    then the embedding itself (reduced batch by batch; a padded token's ``a_ip`` is 0) and ``h (N, 1)`` ones, as
    ``a (x) [1] = a``.
    """
    dense = isinstance(task, PerPosition)
    with scoring_model(model) as model, evaluation(model):
        position_head = position_head_of(model, task) if dense else None

        def fn(x: Inputs) -> tuple[Tensor, Tensor]:
            if position_head is not None:
                (h, logits), head = position_features_and_logits(model, x, task), position_head
            else:
                h, logits, head = features_and_logits(model, x)
            bias = head.bias is not None
            z, h = logits.double(), h.double()
            a = task.output_gradient(z, task.batch_pseudo_targets(z, x))
            if dense:  # classes and features on dim 1: (N, C, *positions), (N, D, *positions)
                a, h = task.classes_first(a), task.classes_first(h)
            if bias:
                h = torch.cat([h, h.new_ones(h.shape[0], 1, *h.shape[2:])], 1)
            if not dense:
                return a, h
            return torch.bmm(a.flatten(2), h.flatten(2).transpose(1, 2)).flatten(1), h.new_ones(h.shape[0], 1)

        out = collect(model, loader, fn, progress, "Embedding", label_key)
    if not out:
        return torch.zeros(0, 0, dtype=torch.float64), torch.zeros(0, 0, dtype=torch.float64)
    return out[0], out[1]


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

    Embeds each pool sample as its last-layer gradient of the task's loss at its pseudo targets (``argmax f(x)``
    for classification; eval mode) and selects the batch by k-means++ seeding, trading off uncertainty (embedding
    norm) and diversity. Only the factors ``a (N, C)`` and ``h (N, D)`` are kept: memory ``O(N (C + D))``, never
    the ``(N, C * D)`` embedding matrix; segmentation and token classification, whose embedding is no outer product,
    keep it explicit (small: their head maps few features to few classes; see :func:`gradient_embedding_factors`).
    The draw uses a generator seeded by ``seed`` at every call. ``score`` returns the embedding norms (for
    logging).

    Args:
        seed: seed of the k-means++ draws.
    """

    joint = True
    tasks = (Classification, MultiLabel, Segmentation, TokenClassification)
    why_not = "its embedding is the head's gradient of a classification, multi-label, segmentation or token loss"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)

    def _factors(self, model: nn.Module, pool_loader: Any, progress: bool) -> tuple[Tensor, Tensor, Tensor]:
        """``(a, h, norms)``; raises on non-finite embeddings."""
        a, h = gradient_embedding_factors(model, pool_loader, progress, self.label_key, self.task)
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
