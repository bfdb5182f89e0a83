"""dynamicAL deep active learning for PyTorch Lightning."""

from lightning_dynamical.callback import ActiveLearningLoop
from lightning_dynamical.convergence import Convergence
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.label_studio import LabelStudioOracle
from lightning_dynamical.module import Classifier
from lightning_dynamical.oracle import DatasetOracle, FileOracle, LabelsPending, Oracle
from lightning_dynamical.pool import ActiveLearningDataModule, LabelError
from lightning_dynamical.queries import Query
from lightning_dynamical.stopping import (
    GradientNormDecay,
    LabelBudget,
    StabilizingPredictions,
    StoppingCriterion,
    ValidationPlateau,
)
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
