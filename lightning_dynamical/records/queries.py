"""A round's :class:`Query`, and ``al_queries.csv``: every queried sample, one row each, whatever logger is attached.

Columns: ``round, index, score, pseudo_label, label, labeled_by`` where ``label`` is the label the model
trains on (a class index; label sets and masks as the task encodes them, see
:meth:`~lightning_dynamical.tasks.base.Task.encode_label`) and ``labeled_by`` who gave it (``dataset``, ``file``,
``label-studio`` or an oracle's own ``source``). The file is rewritten atomically (temporary sibling + rename)
each time a round's labels come in; rows of that round and later ones are replaced, so a resumed run never keeps
rows of rounds it redoes.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fsspec.core import url_to_fs
from torch import Tensor

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.records import files as records
from lightning_dynamical.tasks.batches import batch_targets

QUERIES_FILE = "al_queries.csv"
QUERY_RECORD_FIELDS = ("round", "index", "score", "pseudo_label", "label", "labeled_by")


@dataclass
class Query:
    """What an oracle is asked: pool indices with their scores and pseudo labels (if the strategy has them)."""

    round: int
    indices: list[int]
    scores: Tensor | None
    pseudo_labels: Tensor | None


def read_queries(dirpath: str) -> list[dict[str, str]]:
    """The rows of ``dirpath``'s ``al_queries.csv`` (none when there is no such file)."""
    fs, path = url_to_fs(records.join(dirpath, QUERIES_FILE))
    if not fs.exists(path):
        return []
    csv.field_size_limit(sys.maxsize)  # an encoded mask can exceed the default 131,072 characters
    with fs.open(path, "r") as f:
        return list(csv.DictReader(f))


def write_round(dirpath: str, round: int, rows: Sequence[dict[str, Any]]) -> None:
    """Keep the rows of rounds before ``round``, put ``rows`` after them, and rewrite the file atomically."""
    kept = [r for r in read_queries(dirpath) if int(r["round"]) < round]
    records.atomic_write_csv(records.join(dirpath, QUERIES_FILE), QUERY_RECORD_FIELDS, [*kept, *rows])


def cut_back(dirpath: str, round: int) -> None:
    """Drop the rows of ``round`` and later (a resumed run redoes them); no file, nothing to do."""
    rows = read_queries(dirpath)
    if rows and any(int(r["round"]) >= round for r in rows):
        write_round(dirpath, round, [])


def query_rows(query: Query, datamodule: ActiveLearningDataModule, labeled_by: str) -> list[dict[str, Any]]:
    """One row per queried sample, with the label the labeled set now serves for it."""
    given = dict(datamodule.state_dict()["given_labels"])
    scores = query.scores.tolist() if query.scores is not None else [None] * len(query.indices)
    pseudo = list(query.pseudo_labels) if query.pseudo_labels is not None else [None] * len(query.indices)
    encode = datamodule.task.encode_label
    rows = []
    for index, score, pseudo_label in zip(query.indices, scores, pseudo):
        index = int(index)
        label = given[index] if index in given else _dataset_label(datamodule, index)
        rows.append({"round": query.round, "index": index, "score": "" if score is None else score,
                     "pseudo_label": "" if pseudo_label is None else encode(pseudo_label),
                     "label": "" if label is None else label, "labeled_by": labeled_by})
    return rows


def _dataset_label(datamodule: ActiveLearningDataModule, index: int) -> int | str | None:
    """The data set's own target for ``index`` (what the model trains on when no oracle label was given), encoded
    as in the state file."""
    try:
        return datamodule.task.encode_label(torch.as_tensor(batch_targets(datamodule.splits.pool_eval[index],
                                                                          datamodule.label_key)))
    except (TypeError, ValueError, IndexError):
        return None
