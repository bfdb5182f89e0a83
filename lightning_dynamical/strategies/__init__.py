"""Query strategies: each a small class with ``score`` (and, for joint selection, ``select``)."""

from lightning_dynamical.strategies.base import NonFiniteScoresError, Strategy, check_finite, top_b
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.random import Random

__all__ = ["DynamicAL", "NonFiniteScoresError", "Random", "Strategy", "check_finite", "top_b"]
