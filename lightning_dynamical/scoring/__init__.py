"""Per-sample gradient engines and the pieces they share."""

from collections.abc import Callable

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.scoring.auto import AutoEngine
from lightning_dynamical.scoring.common import ParamSpec, scoring_model, select_parameters, summed_gradient
from lightning_dynamical.scoring.engine import Engine, ParameterPath, PoolStatistics
from lightning_dynamical.scoring.exact import ExactGradients, ScoringError
from lightning_dynamical.scoring.fast import FastEngine
from lightning_dynamical.scoring.func import FuncEngine
from lightning_dynamical.scoring.last_layer import LastLayerEngine, NotLastLayerError
from lightning_dynamical.scoring.layers import LayerRule, register_op
from lightning_dynamical.tasks.batches import evaluation

__all__ = [
    "AutoEngine",
    "Engine",
    "ExactGradients",
    "FastEngine",
    "FuncEngine",
    "LastLayerEngine",
    "LayerRule",
    "NotLastLayerError",
    "ParamSpec",
    "ParameterPath",
    "PoolStatistics",
    "ScoringError",
    "evaluation",
    "make_engine",
    "register_op",
    "scoring_model",
    "select_parameters",
    "summed_gradient",
]

ENGINES: dict[str, Callable[..., Engine]] = {
    "auto": AutoEngine,
    "fast": FastEngine,
    "func": FuncEngine,
    "last_layer": LastLayerEngine,
}


def make_engine(name: str, chunk_size: int | None = 32) -> Engine:
    """The engine called ``name``: ``"auto"`` (fastest exact), ``"fast"``, ``"func"`` or ``"last_layer"``."""
    if name not in ENGINES:
        raise ConfigError(f"Unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    return ENGINES[name](chunk_size=chunk_size)
