"""Reference engine: exact per-sample gradients of every selected parameter with ``torch.func``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lightning_dynamical.scoring.common import alone_pseudo_targets, uses_batch_statistics
from lightning_dynamical.scoring.engine import Engine, ParameterPath
from lightning_dynamical.scoring.exact import ExactGradients
from lightning_dynamical.scoring.layers import gradient_statistics
from lightning_dynamical.scoring.trace import samples_independent
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import Inputs, batch_size, forward_logits
from lightning_dynamical.tasks.classification import CLASSIFICATION


class FuncEngine(Engine):
    """``vmap(grad)`` over each chunk of samples, materialising their gradients; raises
    :class:`~lightning_dynamical.scoring.exact.ScoringError` where ``vmap`` cannot run the model.

    Args:
        chunk_size: samples per ``vmap`` call; bounds memory at ``chunk_size * n_params`` floats.
    """

    name = "func"

    def __init__(self, chunk_size: int | None = 32) -> None:
        super().__init__()
        self.exact = ExactGradients(chunk_size, allow_loop=False)
        self.chunk_size = chunk_size

    def batch_statistics(
        self,
        model: nn.Module,
        inputs: Inputs,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
        task: Task = CLASSIFICATION,
    ) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            logits = forward_logits(model, inputs, task)
        coupled = uses_batch_statistics(model) or (
            batch_size(inputs) > 1 and not samples_independent(model, inputs, logits, task))
        # vmap scores each sample alone: where the batch couples its samples, so are their pseudo labels taken
        y = alone_pseudo_targets(model, inputs, task) if coupled else task.batch_pseudo_targets(logits, inputs)
        grads, path, _ = self.exact.gradients(model, inputs, y, params, task)
        self.paths = {n: ParameterPath(n, path) for n in params}  # chosen by the user: no warning
        sq, dots = gradient_statistics(grads, directions)
        return sq, dots, y
