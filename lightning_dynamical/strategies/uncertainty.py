"""Classic uncertainty sampling on softmax outputs: entropy, margin and least confidence."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.strategies.base import Reducer, Strategy, identity
from lightning_dynamical.strategies.inference import probabilities


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy (nats) over the last dimension, with ``0 log 0 = 0``."""
    return -torch.special.xlogy(p, p).sum(-1)


class _SoftmaxUncertainty(Strategy):
    """One eval-mode pass for the softmax outputs, then a per-sample uncertainty (higher = query first)."""

    def uncertainty(self, p: Tensor) -> Tensor:
        """``(N,)`` uncertainty of ``(N, C)`` probabilities."""
        raise NotImplementedError

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], *,
              reduce: Reducer = identity, progress: bool = False) -> Tensor:
        p = probabilities(model, pool_loader, progress, self.label_key)
        return self.uncertainty(p) if p.numel() else p.new_zeros(p.shape[0])


class Entropy(_SoftmaxUncertainty):
    """Predictive entropy ``-sum_c p_c log p_c``."""

    def uncertainty(self, p: Tensor) -> Tensor:
        return entropy(p)


class Margin(_SoftmaxUncertainty):
    """Negated gap between the two largest probabilities, ``-(p_1 - p_2)``: small gaps are queried first."""

    def uncertainty(self, p: Tensor) -> Tensor:
        if p.shape[1] < 2:
            raise ValueError("Margin sampling needs at least two classes")
        top = p.topk(2, dim=1).values
        return top[:, 1] - top[:, 0]


class LeastConfidence(_SoftmaxUncertainty):
    """One minus the largest probability, ``1 - max_c p_c``."""

    def uncertainty(self, p: Tensor) -> Tensor:
        return 1 - p.max(1).values
