"""The paper's Eq. 14: how well the per-sample sum approximates the batch's true effect on G(S)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from lightning_dynamical.batches import evaluation
from lightning_dynamical.scoring import make_engine
from lightning_dynamical.scoring.common import ParamSpec, select_parameters, summed_gradient


def approximation_ratio(model: nn.Module, labeled_loader: Iterable[Any], query_loader: Iterable[Any],
                        params: ParamSpec = None) -> float:
    """``sum_u Delta_u / (||G_S + G_Q||^2 - ||G_S||^2)`` with ``Delta_u = ||g_u||^2 + 2 g_u . G_S``.

    Exact identity used: the denominator is ``||G_Q||^2 + 2 G_Q . G_S`` and the numerator is
    ``sum_u ||g_u||^2 + 2 G_Q . G_S``; a ratio of 1 means the cross terms between queried samples vanish.
    """
    with evaluation(model):
        theta = select_parameters(model, params)
        g_s = summed_gradient(model, labeled_loader, theta)
        g_q = summed_gradient(model, query_loader, theta, pseudo_labels=True)
        sq = make_engine("auto").pool_statistics(model, query_loader, theta).sqnorm.sum()
    cross = sum((g_q[n].double() * g_s[n].double()).sum() for n in theta)
    norm_q = sum(g_q[n].double().pow(2).sum() for n in theta)
    return float((sq.double() + 2 * cross) / (norm_q + 2 * cross))
