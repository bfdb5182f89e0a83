"""The contract every per-sample gradient engine fulfils."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass
class PoolStatistics:
    """Per-sample quantities of a pool, aligned with the loader's order.

    ``sqnorm[i] = ||g_i||^2`` and ``dots[i, k] = g_i . directions[k]``, where ``g_i`` is the gradient of
    ``CE_sum(f(x_i), argmax f(x_i))`` over the selected parameters, and ``pseudo_labels[i] = argmax f(x_i)``.
    """

    sqnorm: Tensor
    dots: Tensor
    pseudo_labels: Tensor


class Engine(ABC):
    """Computes :class:`PoolStatistics` without storing per-sample gradients for the whole pool."""

    name: str = "engine"

    @abstractmethod
    def batch_statistics(
        self,
        model: nn.Module,
        x: Tensor,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(sqnorm (B,), dots (B, K), pseudo_labels (B,))`` for one input batch already on the model's device."""

    def pool_statistics(
        self,
        model: nn.Module,
        loader: Iterable[Any],
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]] = (),
        progress: bool = False,
    ) -> PoolStatistics:
        """Run :meth:`batch_statistics` over a loader; results are gathered on the CPU."""
        from lightning_dynamical.scoring.common import batch_inputs, to_model

        sq, dots, labels = [], [], []
        bar = tqdm(loader, desc=f"Scoring pool ({self.name})", leave=False, disable=not progress, unit="batch")
        for batch in bar:
            x = to_model(batch_inputs(batch), model)
            s, d, y = self.batch_statistics(model, x, params, directions)
            sq.append(s.detach().cpu())
            dots.append(d.detach().cpu())
            labels.append(y.detach().cpu())
        if not sq:
            dtype = next(iter(params.values())).dtype
            return PoolStatistics(torch.zeros(0, dtype=dtype), torch.zeros(0, len(directions), dtype=dtype),
                                  torch.zeros(0, dtype=torch.long))
        return PoolStatistics(torch.cat(sq), torch.cat(dots), torch.cat(labels))


def flat_dots(grads: Mapping[str, Tensor], directions: Sequence[Mapping[str, Tensor]], batch: int) -> Tensor:
    """``(B, K)`` dot products of per-sample gradients ``grads[name]: (B, *shape)`` with each direction."""
    out = None
    for name, g in grads.items():
        flat = g.reshape(batch, -1)
        if not directions:
            continue
        d = torch.stack([direction[name].reshape(-1).to(flat) for direction in directions], 1)
        out = flat @ d if out is None else out + flat @ d
    if out is None:
        first = next(iter(grads.values()))
        return first.new_zeros(batch, len(directions))
    return out
