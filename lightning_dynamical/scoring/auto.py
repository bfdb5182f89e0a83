"""``engine="auto"``: the cheapest exact engine for the model and the selected parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from lightning_dynamical.scoring.engine import Engine
from lightning_dynamical.scoring.fast import FastEngine
from lightning_dynamical.scoring.last_layer import LastLayerEngine, NotLastLayerError


class AutoEngine(Engine):
    """The last-layer closed form when only the head's parameters are selected, else the fast engine."""

    name = "auto"

    def __init__(self, chunk_size: int | None = 32) -> None:
        self.fast = FastEngine(chunk_size)
        self.last_layer = LastLayerEngine()

    def batch_statistics(
        self,
        model: nn.Module,
        x: Tensor,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
    ) -> tuple[Tensor, Tensor, Tensor]:
        try:
            return self.last_layer.batch_statistics(model, x, params, directions)
        except NotLastLayerError:
            return self.fast.batch_statistics(model, x, params, directions)
