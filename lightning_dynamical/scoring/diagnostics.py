"""Which term chose a dynamicAL query, and the paper's Eq. 14: how well the per-sample sum approximates the
batch's true effect on G(S)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from lightning_dynamical.scoring import make_engine
from lightning_dynamical.scoring.common import ParamSpec, scoring_model, summed_gradient
from lightning_dynamical.scoring.features import parameters_on
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import LABEL_KEY, evaluation
from lightning_dynamical.tasks.classification import CLASSIFICATION


@dataclass(frozen=True)
class QueryRegime:
    """Over a queried batch Q (pseudo labels) and the labeled set S, in eval mode.

    Attributes:
        sqnorm_median: median over Q of ``||g_u||^2``.
        dot_median: median over Q of ``g_u . G_S``.
        dot_ratio_median: median over Q of ``g_u . G_S / ||g_u||^2`` (large: the training-dynamics term chose;
            unstable when both terms are tiny, so never a warning on its own).
        approximation_ratio: Eq. 14, ``sum_u Delta_u / (||G_S + G_Q||^2 - ||G_S||^2)`` with
            ``Delta_u = ||g_u||^2 + 2 g_u . G_S``.
    """

    sqnorm_median: float
    dot_median: float
    dot_ratio_median: float
    approximation_ratio: float

    def row(self) -> dict[str, float]:
        """The ``al_rounds.csv`` columns (``query_<name>``)."""
        return {f"query_{k}": v for k, v in asdict(self).items()}


NO_REGIME = QueryRegime(math.nan, math.nan, math.nan, math.nan)
"""The row of a round without a query (or whose strategy is not gradient-based)."""


def query_regime(model: nn.Module, labeled_loader: Iterable[Any], query_loader: Iterable[Any],
                 params: ParamSpec = None, label_key: str = LABEL_KEY, task: Task = CLASSIFICATION) -> QueryRegime:
    """:class:`QueryRegime` of ``query_loader``'s samples (one gradient pass over S, two over Q), for ``task``'s
    loss (targets on S, pseudo targets on Q).

    Exact identities used: ``sum_u g_u . G_S = G_Q . G_S``, so Eq. 14's denominator is ``||G_Q||^2 + 2 G_Q . G_S``
    and its numerator ``sum_u ||g_u||^2 + 2 G_Q . G_S``; a ratio of 1 means the cross terms between queried
    samples vanish.
    """
    with scoring_model(model) as model, evaluation(model):
        theta = parameters_on(model, params, query_loader, label_key, task)
        g_s = summed_gradient(model, labeled_loader, theta, label_key=label_key, task=task)
        g_q = summed_gradient(model, query_loader, theta, pseudo_labels=True, label_key=label_key, task=task)
        stats = make_engine("auto").pool_statistics(model, query_loader, theta, [g_s], label_key=label_key,
                                                    task=task)
    sq, dots = stats.sqnorm.double(), stats.dots[:, 0].double()
    cross = sum((g_q[n].double() * g_s[n].double()).sum() for n in theta)
    norm_q = sum(g_q[n].double().pow(2).sum() for n in theta)
    ratio = float((sq.sum() + 2 * cross) / (norm_q + 2 * cross))
    per_sample = dots / sq.clamp_min(torch.finfo(torch.float64).tiny)
    return QueryRegime(float(sq.median()), float(dots.median()), float(per_sample.median()), ratio)


def approximation_ratio(model: nn.Module, labeled_loader: Iterable[Any], query_loader: Iterable[Any],
                        params: ParamSpec = None, task: Task = CLASSIFICATION) -> float:
    """Eq. 14 of the queried batch (see :func:`query_regime`)."""
    return query_regime(model, labeled_loader, query_loader, params, task=task).approximation_ratio
