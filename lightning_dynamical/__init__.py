"""dynamicAL deep active learning for PyTorch Lightning."""

from lightning_dynamical.callback import ActiveLearningLoop
from lightning_dynamical.convergence import Convergence
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.module import Classifier
from lightning_dynamical.oracle import DatasetOracle, Oracle, Query
from lightning_dynamical.pool import ActiveLearningDataModule, LabelError
from lightning_dynamical.strategies import (
    ALBL,
    BADGE,
    BALD,
    Coreset,
    DynamicAL,
    Entropy,
    LeastConfidence,
    Margin,
    NonFiniteScoresError,
    Random,
    Strategy,
)

__all__ = [
    "ALBL",
    "BADGE",
    "BALD",
    "Coreset",
    "Entropy",
    "LeastConfidence",
    "Margin",
    "ActiveLearningDataModule",
    "ActiveLearningLoop",
    "Classifier",
    "ConfigError",
    "Convergence",
    "DatasetOracle",
    "DynamicAL",
    "LabelError",
    "NonFiniteScoresError",
    "Oracle",
    "Query",
    "Random",
    "Strategy",
]

__version__ = "0.1.0"
