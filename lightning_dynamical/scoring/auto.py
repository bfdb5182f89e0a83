"""``engine="auto"``: the cheapest exact engine for the model and the selected parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from lightning_dynamical.scoring.engine import Engine
from lightning_dynamical.scoring.fast import FastEngine
from lightning_dynamical.scoring.last_layer import LastLayerEngine, NotLastLayerError
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import Inputs
from lightning_dynamical.tasks.classification import CLASSIFICATION


class AutoEngine(Engine):
    """The last-layer closed form when only the head's parameters are selected, else the fast engine."""

    name = "auto"

    def __init__(self, chunk_size: int | None = 32) -> None:
        super().__init__()
        self.fast = FastEngine(chunk_size)
        self.last_layer = LastLayerEngine()

    def batch_statistics(
        self,
        model: nn.Module,
        inputs: Inputs,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
        task: Task = CLASSIFICATION,
    ) -> tuple[Tensor, Tensor, Tensor]:
        engine: Engine = self.last_layer if self._head_only(model, params) else self.fast
        try:
            out = engine.batch_statistics(model, inputs, params, directions, task)
        except NotLastLayerError:
            engine = self.fast
            out = engine.batch_statistics(model, inputs, params, directions, task)
        self.paths = engine.paths
        return out

    @staticmethod
    def _head_only(model: nn.Module, params: Mapping[str, nn.Parameter]) -> bool:
        """Whether the selection is a subset of one ``nn.Linear``'s weight and bias (a candidate head)."""
        ids = {id(p) for p in params.values()}
        return any(isinstance(m, nn.Linear) and ids <= {id(m.weight), id(m.bias)} for m in model.modules())
