"""What a data builder returns: the pool (with training and evaluation transforms), val and test sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset


@dataclass
class DatasetSplits:
    """Datasets for one active-learning problem.

    ``pool`` and ``pool_eval`` hold the same samples in the same order: ``pool`` with the training
    transform (augmentation), ``pool_eval`` with the evaluation transform used for scoring.
    ``val`` may be ``None`` (the DataModule can then hold out part of the pool).
    """

    pool: Dataset
    pool_eval: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int


def dataset_size(dataset: Any) -> int:
    """``len(dataset)``: map-style datasets have a length, though ``torch.utils.data.Dataset`` does not declare it."""
    return len(dataset)
