"""dynamicAL (NeurIPS 2022): query the samples whose gradients most change the training dynamics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from lightning_dynamical.scoring import ParamSpec, evaluation, make_engine, select_parameters, summed_gradient
from lightning_dynamical.strategies.base import Strategy


class DynamicAL(Strategy):
    """``score_u = ||g_u||^2 + gamma * g_u . G_S``.

    ``g_u`` is the gradient of ``CE_sum(f(x_u), argmax f(x_u))`` and ``G_S`` the summed gradient of the
    labeled set, both in eval mode over the parameters ``params``. ``gamma=0`` is expected gradient
    length; ``gamma=inf`` keeps only ``g_u . G_S``.

    Args:
        gamma: weight of the training-dynamics term, ``>= 0`` or ``inf``.
        params: ``None`` (all trainable parameters), ``"last_layer"`` or a list of parameter names.
        engine: per-sample gradient engine (``"auto"``, ``"func"``, ...).
        chunk_size: samples per vectorised gradient call (bounds memory).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        params: ParamSpec = None,
        engine: str = "auto",
        chunk_size: int | None = 32,
    ) -> None:
        super().__init__()
        gamma = float(gamma)
        if math.isnan(gamma) or gamma < 0:
            raise ValueError(f"gamma must be >= 0 or inf, got {gamma}")
        self.gamma = gamma
        self.params = params if params is None or isinstance(params, str) else list(params)
        self.engine = engine
        self.chunk_size = chunk_size
        self._engine = make_engine(engine, chunk_size)

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any]) -> Tensor:
        with evaluation(model):
            params = select_parameters(model, self.params)
            directions = []
            if self.gamma != 0:
                g_s = summed_gradient(model, labeled_loader, params)
                directions = [{n: self.reduce_sum(g) for n, g in g_s.items()}]
            stats = self._engine.pool_statistics(model, pool_loader, params, directions, self.progress)
        if self.gamma == 0:
            scores = stats.sqnorm
        elif math.isinf(self.gamma):
            scores = stats.dots[:, 0]
        else:
            scores = stats.sqnorm + self.gamma * stats.dots[:, 0]
        self.last_scores = scores
        self.last_pseudo_labels = stats.pseudo_labels
        return scores
