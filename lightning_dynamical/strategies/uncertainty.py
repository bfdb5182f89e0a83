"""Classic uncertainty sampling: entropy, margin and least confidence of each sample's predicted distribution.

Classification: of the softmax. Segmentation: of each pixel's softmax (over dim 1), averaged over the sample's
pixels (mean pixel entropy, margin or least confidence, as the segmentation literature scores images). Token
classification: of each token's softmax, averaged over the sample's real tokens (padding left out, from the task's
:meth:`~lightning_dynamical.tasks.base.Task.real_positions`). Multi-label (:class:`Entropy` only): the sum over the
labels of each label's binary entropy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lightning_dynamical.scoring.common import scoring_model
from lightning_dynamical.strategies.base import Reducer, Strategy, identity
from lightning_dynamical.strategies.inference import collect
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import Inputs, evaluation, forward_logits
from lightning_dynamical.tasks.classification import Classification
from lightning_dynamical.tasks.multilabel import MultiLabel
from lightning_dynamical.tasks.segmentation import Segmentation
from lightning_dynamical.tasks.tokens import TokenClassification


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy (nats) over the last dimension, with ``0 log 0 = 0``."""
    return -torch.special.xlogy(p, p).sum(-1)


def distributions(logits: Tensor, multilabel: bool) -> Tensor:
    """``(batch, *positions, outcomes)`` predicted distributions in float64: the softmax over dim 1 with the classes
    moved last (one per sample, or per pixel or token of classes-first logits), or one Bernoulli ``(1 - s, s)`` per
    label for multi-label logits."""
    z = logits.double()
    if multilabel:
        return torch.stack([torch.sigmoid(-z), torch.sigmoid(z)], -1)
    return z.softmax(1).movedim(1, -1)


def position_mean(u: Tensor, real: Tensor | None) -> Tensor:
    """``(batch,)`` means of ``u (batch, *positions)`` over each sample's real positions (all when ``real`` is
    ``None``; 0 for a sample without any)."""
    if real is None:
        return u.flatten(1).mean(1)
    w = real.flatten(1).to(u.dtype)
    return (u.flatten(1) * w).sum(1) / w.sum(1).clamp_min(1)


class _Uncertainty(Strategy):
    """One eval-mode pass; each batch reduced to ``(batch,)`` uncertainties before the next (streaming, so a
    segmentation pool is never held as ``(N, C, H, W)``). Higher = query first."""

    tasks: ClassVar[tuple[type[Task], ...]] = (Classification, Segmentation, TokenClassification)

    def uncertainty(self, p: Tensor) -> Tensor:
        """Uncertainty of distributions ``p`` over the last dimension (which it removes)."""
        raise NotImplementedError

    def sample_uncertainty(self, logits: Tensor, inputs: Inputs | None = None) -> Tensor:
        """``(batch,)``: :meth:`uncertainty` of the prediction, summed over a multi-label sample's labels or averaged
        over a segmentation sample's pixels or a token sample's real tokens (``inputs``: the batch's, which say where
        its padding is)."""
        multilabel = isinstance(self.task, MultiLabel)
        u = self.uncertainty(distributions(self.task.classes_first(logits), multilabel))
        if u.ndim == 1:
            return u
        return u.flatten(1).sum(1) if multilabel else position_mean(u, self.task.real_positions(logits, inputs))

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], *,
              reduce: Reducer = identity, progress: bool = False) -> Tensor:
        with scoring_model(model) as model, evaluation(model):
            def fn(x: Inputs) -> tuple[Tensor]:
                return (self.sample_uncertainty(forward_logits(model, x, self.task), x),)

            out = collect(model, pool_loader, fn, progress, "Predicting", self.label_key)
        return out[0] if out else torch.zeros(0, dtype=torch.float64)


class Entropy(_Uncertainty):
    """Predictive entropy ``-sum_c p_c log p_c`` (multi-label: summed over the labels)."""

    tasks = (Classification, Segmentation, TokenClassification, MultiLabel)
    why_not = "it reads a softmax over the classes (per sample, pixel or token) or one sigmoid per label"

    def uncertainty(self, p: Tensor) -> Tensor:
        return entropy(p)


class Margin(_Uncertainty):
    """Negated gap between the two largest probabilities, ``-(p_1 - p_2)``: small gaps are queried first."""

    why_not = ("the gap between the two most probable classes is that of one softmax (per sample, pixel or token); "
               "per-label margins have no one standard combination (Entropy sums the labels' binary entropies)")

    def uncertainty(self, p: Tensor) -> Tensor:
        if p.shape[-1] < 2:
            raise ValueError("Margin sampling needs at least two classes")
        top = p.topk(2, dim=-1).values
        return top[..., 1] - top[..., 0]


class LeastConfidence(_Uncertainty):
    """One minus the largest probability, ``1 - max_c p_c``."""

    why_not = ("the largest probability is that of one softmax (per sample, pixel or token); per-label confidences "
               "have no one standard combination (Entropy sums the labels' binary entropies)")

    def uncertainty(self, p: Tensor) -> Tensor:
        return 1 - p.max(-1).values
