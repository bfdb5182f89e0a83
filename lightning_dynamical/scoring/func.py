"""Reference engine: exact per-sample gradients with ``torch.func`` (``functional_call`` + ``vmap(grad)``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lightning_dynamical.scoring.common import check_logits
from lightning_dynamical.scoring.engine import Engine, flat_dots


class FuncEngine(Engine):
    """Materialises each chunk's per-sample gradients for the selected parameters; works for any model.

    Args:
        chunk_size: samples per ``vmap`` call; bounds memory at ``chunk_size * n_params`` floats.
    """

    name = "func"

    def __init__(self, chunk_size: int | None = 32) -> None:
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
        self.chunk_size = chunk_size

    def per_sample_gradients(
        self, model: nn.Module, x: Tensor, y: Tensor, params: Mapping[str, nn.Parameter]
    ) -> dict[str, Tensor]:
        """``{name: (B, *shape)}`` gradients of ``CE(model(x_i), y_i)`` for each sample (model mode as set)."""
        selected = {n: p.detach() for n, p in params.items()}
        constants = {n: p.detach() for n, p in model.named_parameters() if n not in selected}
        constants.update(dict(model.named_buffers()))

        def loss(theta: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            logits = functional_call(model, {**constants, **theta}, (xi.unsqueeze(0),))
            return nn.functional.cross_entropy(logits, yi.unsqueeze(0), reduction="sum")

        return vmap(grad(loss), in_dims=(None, 0, 0), chunk_size=self.chunk_size)(selected, x, y)

    def batch_statistics(
        self,
        model: nn.Module,
        x: Tensor,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
    ) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            y = check_logits(model(x), x.shape[0]).argmax(1)
        grads = self.per_sample_gradients(model, x, y, params)
        b = x.shape[0]
        sqnorm = sum(g.reshape(b, -1).pow(2).sum(1) for g in grads.values())
        return sqnorm, flat_dots(grads, directions, b), y
