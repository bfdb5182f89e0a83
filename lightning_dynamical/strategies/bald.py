"""BALD (Houlsby et al. 2011; Gal et al. 2017): label-weights mutual information by MC dropout."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.errors import check_positive_int
from lightning_dynamical.strategies.base import Reducer, Strategy, identity
from lightning_dynamical.strategies.inference import collect, mc_dropout, softmax
from lightning_dynamical.strategies.uncertainty import entropy
from lightning_dynamical.tasks.batches import Inputs, forward_logits


def mutual_information(p: Tensor) -> Tensor:
    """``H[mean_t p_t] - mean_t H[p_t]`` for ``(N, T, C)`` probabilities; clamped at 0 against round-off."""
    return (entropy(p.mean(1)) - entropy(p).mean(1)).clamp_min(0)


class BALD(Strategy):
    """Score ``I[y; w | x]`` estimated from ``mc_samples`` stochastic forward passes.

    Only dropout modules are put in training mode (BatchNorm keeps its running statistics). The passes run
    under a forked RNG seeded by ``seed`` at every call, so scores are reproducible (also after a resume)
    and the global RNG is left untouched. Memory is ``O(batch * mc_samples * classes)``: the mutual
    information is reduced batch by batch.

    Args:
        mc_samples: number of stochastic passes ``T``.
        seed: seed of the dropout masks.
    """

    why_not = "its mutual information is that of one softmax over the classes per sample, (batch, classes) logits"

    def __init__(self, mc_samples: int = 20, seed: int = 0) -> None:
        super().__init__()
        check_positive_int("mc_samples", mc_samples)
        self.mc_samples = int(mc_samples)
        self.seed = int(seed)

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], *,
              reduce: Reducer = identity, progress: bool = False) -> Tensor:
        def fn(x: Inputs) -> tuple[Tensor]:
            passes = [softmax(forward_logits(model, x)) for _ in range(self.mc_samples)]
            return (mutual_information(torch.stack(passes, 1)),)

        with mc_dropout(model, self.seed):
            out = collect(model, pool_loader, fn, progress, "BALD", self.label_key)
        return out[0] if out else torch.zeros(0, dtype=torch.float64)
