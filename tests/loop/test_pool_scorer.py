"""PoolScorer and Selection: one process, any strategy; positions become pool indices in one place."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_dynamical import ActiveLearningDataModule, Entropy, Random, Selection
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop.pool_scorer import PoolScorer
from tests.helpers.tiny import toy_dataset

TRAINER = SimpleNamespace(world_size=1, global_rank=0, is_global_zero=True, progress_bar_callback=None)


def _problem() -> tuple[nn.Module, ActiveLearningDataModule]:
    dm = ActiveLearningDataModule(toy_dataset(40, features=3), initial_size=10, eval_batch_size=7)
    dm.setup()
    return nn.Linear(3, 2), dm


def test_subset_selection_is_pool_indices_with_pseudo_labels_and_repeats() -> None:
    model, dm = _problem()
    scorer = PoolScorer(Random(seed=3), pool_subset=12, seed=5, query_size=4)
    scorer.setup(TRAINER, dm)
    first = scorer.query(TRAINER, model, dm, 0, 4)
    assert len(first.query.indices) == 4 and set(first.query.indices) <= set(dm.unlabeled_indices)
    assert first.pool_scores is not None and first.pool_scores.numel() == 12  # only the subset is scored
    x = dm.splits.pool_eval.tensors[0][first.query.indices]
    assert first.query.pseudo_labels.tolist() == model(x).argmax(1).tolist()  # the model's, Random gives none
    assert first.query.scores.tolist() == sorted(first.pool_scores.tolist(), reverse=True)[:4]
    assert scorer.query(TRAINER, model, dm, 0, 4).query.indices == first.query.indices
    assert scorer.query(TRAINER, model, dm, 1, 4).query.indices != first.query.indices  # a new subset each round
    assert set(first.metrics()) >= {"al/score_mean", "al/selected_score_mean"}


def test_whole_pool_matches_the_strategy_and_bad_subsets_are_refused() -> None:
    model, dm = _problem()
    scorer = PoolScorer(Entropy(), pool_subset=None, seed=0, query_size=5)
    scorer.setup(TRAINER, dm)
    got = scorer.query(TRAINER, model, dm, 0, 5).query.indices
    picked = Entropy().select(model, dm.eval_loader(dm.pool_dataset()), [], 5).positions
    assert got == [dm.unlabeled_indices[p] for p in picked.tolist()]
    with pytest.raises(ConfigError, match="pool_subset must be null or an int >= query_size"):
        PoolScorer(Entropy(), pool_subset=3, seed=0, query_size=5)


def test_selection_checks_its_lengths() -> None:
    scores = torch.tensor([0.1, 0.9, 0.5], dtype=torch.float64)
    top = Selection.top(scores, 2, pseudo_labels=torch.tensor([0, 1, 2]))
    assert top.positions.tolist() == [1, 2] and top.scores.tolist() == [0.9, 0.5]
    assert top.pseudo_labels.tolist() == [1, 2] and top.pool_scores is scores
    with pytest.raises(ValueError, match="Selection.scores has 3 entries for 2 positions"):
        Selection(torch.tensor([0, 1]), scores=scores)
