"""Query strategies: each a small class with ``score`` and ``select`` (returning a :class:`Selection`), and the
task types it applies to (``tasks``; ``use_task`` refuses others with the reason)."""

from lightning_dynamical.strategies.albl import ALBL
from lightning_dynamical.strategies.badge import BADGE
from lightning_dynamical.strategies.bald import BALD
from lightning_dynamical.strategies.base import NonFiniteScoresError, Selection, Strategy, check_finite, top_b
from lightning_dynamical.strategies.coreset import Coreset
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.random import Random
from lightning_dynamical.strategies.uncertainty import Entropy, LeastConfidence, Margin

__all__ = [
    "ALBL",
    "BADGE",
    "BALD",
    "Coreset",
    "DynamicAL",
    "Entropy",
    "LeastConfidence",
    "Margin",
    "NonFiniteScoresError",
    "Random",
    "Selection",
    "Strategy",
    "check_finite",
    "top_b",
]
