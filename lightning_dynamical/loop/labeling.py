"""A query's labels from the oracle into the labeled split, now or (people label it) after a resume."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.loop.pending import PendingQuery
from lightning_dynamical.oracles.base import LabelsPending, Oracle
from lightning_dynamical.records.queries import Query
from lightning_dynamical.records.run import RunRecords

PendingItems = tuple[Query, dict[str, Any], dict[str, float]]
"""A pending query, its round's row and metrics."""


class Labeling:
    """Asks ``oracle`` for a query's labels and adds them to the labeled split, with their rows in
    ``al_queries.csv``. When the oracle answers :class:`LabelsPending`, the query (with its round's row and
    metrics) is kept in :attr:`pending`, which goes into checkpoints, until :meth:`collect` gets its labels."""

    def __init__(self, oracle: Oracle, records: RunRecords) -> None:
        self.oracle = oracle
        self.records = records
        self.pending = PendingQuery()

    def label(self, dm: ActiveLearningDataModule, query: Query, row: dict[str, Any],
              metrics: dict[str, float]) -> LabelsPending | None:
        """Label ``query`` now; or keep it and return the oracle's reason when its labels come later."""
        try:
            labels = self.oracle.label(dm, query)
        except LabelsPending as reason:
            self.pending.keep(row, query, metrics)
            return reason
        self._add(dm, query, labels)
        return None

    def collect(self, dm: ActiveLearningDataModule, round: int) -> PendingItems | None:
        """Add the pending query's labels (asked of the oracle again) and return ``(query, row, metrics)`` of
        its round; ``None`` when nothing is pending."""
        if self.pending.state is None:
            return None
        query, row, metrics = self.pending.query(round)
        self._add(dm, query, self.oracle.collect(dm, query))
        self.pending.clear()
        return query, row, metrics

    def _add(self, dm: ActiveLearningDataModule, query: Query, labels: Sequence[Any] | None) -> None:
        dm.label(query.indices, labels)
        self.records.write_query(query, dm, self.oracle.source)
