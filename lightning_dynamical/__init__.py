"""dynamicAL deep active learning for PyTorch Lightning."""

from lightning_dynamical.data.datamodule import ActiveLearningDataModule, LabelError
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop.callback import ActiveLearningLoop
from lightning_dynamical.loop.convergence import Convergence
from lightning_dynamical.loop.stopping import (
    GradientNormDecay,
    LabelBudget,
    StabilizingPredictions,
    StoppingCriterion,
    ValidationPlateau,
)
from lightning_dynamical.models.classifier import Classifier
from lightning_dynamical.oracles.base import DatasetOracle, FileOracle, LabelsPending, Oracle
from lightning_dynamical.oracles.label_studio import LabelStudioOracle
from lightning_dynamical.records import moved
from lightning_dynamical.records.queries import Query
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
    Selection,
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
    "GradientNormDecay",
    "LabelBudget",
    "FileOracle",
    "LabelError",
    "LabelStudioOracle",
    "LabelsPending",
    "NonFiniteScoresError",
    "Oracle",
    "Query",
    "Random",
    "Selection",
    "StabilizingPredictions",
    "StoppingCriterion",
    "Strategy",
    "ValidationPlateau",
]

__version__ = "0.1.0"

moved.install()
