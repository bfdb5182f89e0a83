"""Per-sample gradient engines and the pieces they share."""

from lightning_dynamical.scoring.common import (
    ParamSpec,
    batch_inputs,
    batch_targets,
    evaluation,
    select_parameters,
    summed_gradient,
)
from lightning_dynamical.scoring.engine import Engine, PoolStatistics
from lightning_dynamical.scoring.func import FuncEngine

__all__ = [
    "Engine",
    "FuncEngine",
    "ParamSpec",
    "PoolStatistics",
    "batch_inputs",
    "batch_targets",
    "evaluation",
    "make_engine",
    "select_parameters",
    "summed_gradient",
]


def make_engine(name: str, chunk_size: int | None = 32) -> Engine:
    """The engine called ``name`` (``"func"``; faster exact engines register here as they land)."""
    engines = {"func": FuncEngine, "auto": FuncEngine}
    if name not in engines:
        raise ValueError(f"Unknown engine {name!r}; choose one of {sorted(engines)}")
    return engines[name](chunk_size=chunk_size)
