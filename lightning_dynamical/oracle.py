"""Oracles answer a query with labels; the simulated one reads the data set's own labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from lightning_dynamical.pool import ActiveLearningDataModule


@dataclass
class Query:
    """What an oracle is asked: pool indices with their scores and pseudo labels (if the strategy has them)."""

    round: int
    indices: list[int]
    scores: Tensor | None
    pseudo_labels: Tensor | None


class Oracle:
    """Base oracle: ``label(datamodule, query)`` returns labels for ``query.indices``, or ``None`` to use the
    data set's own targets."""

    def label(self, datamodule: ActiveLearningDataModule, query: Query) -> Sequence[int] | None:
        raise NotImplementedError


class DatasetOracle(Oracle):
    """Simulated annotator: the data set already holds the true labels."""

    def label(self, datamodule: ActiveLearningDataModule, query: Query) -> Sequence[int] | None:
        return None
