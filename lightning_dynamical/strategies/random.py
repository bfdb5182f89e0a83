"""Uniform random selection, the baseline every strategy must beat."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.records import rng
from lightning_dynamical.strategies.base import Reducer, Strategy, identity
from lightning_dynamical.tasks.base import Task


class Random(Strategy):
    """I.i.d. uniform scores from a generator seeded by ``seed`` and the pool size.

    Stateless (the pool shrinks every round, so each round draws anew), hence identical after a resume
    and on every rank. Applies to every task (it reads no output).
    """

    joint = True
    tasks = (Task,)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], *,
              reduce: Reducer = identity, progress: bool = False) -> Tensor:
        gen = rng.generator(self.seed, len(pool_loader.dataset))
        return torch.rand(len(pool_loader.dataset), generator=gen, dtype=torch.float64)
