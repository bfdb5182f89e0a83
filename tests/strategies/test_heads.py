"""The classifier head is the ``nn.Linear`` whose output is the logits, wherever it is registered: BADGE, Coreset and
``DynamicAL(params="last_layer")`` on a model that defines its head before its body select what they select on the
same weights registered head-last (they took the body's first layer before); a head whose output is not the logits
is refused. Random picks over the whole pool under ``pool_subset`` (its subsets all have one size)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical.loop.pool_scorer import PoolScorer
from lightning_dynamical.strategies.badge import BADGE
from lightning_dynamical.strategies.coreset import Coreset
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.random import Random
from tests.helpers.brute_force import dynamical_scores


class HeadFirst(nn.Module):
    def __init__(self, scale: float | None = None) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.body = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
        self.scale = scale

    def forward(self, x):
        logits = self.head(self.body(x))
        return logits if self.scale is None else logits * self.scale


class HeadLast(nn.Module):
    def __init__(self, twin: HeadFirst) -> None:
        super().__init__()
        self.body = twin.body
        self.head = twin.head

    def forward(self, x):
        return self.head(self.body(x))


def _data():
    gen = torch.Generator().manual_seed(0)
    pool = TensorDataset(torch.randn(30, 5, generator=gen))
    labeled = TensorDataset(torch.randn(6, 5, generator=gen), torch.randint(0, 3, (6,), generator=gen))
    return DataLoader(pool, batch_size=7), DataLoader(labeled, batch_size=4)


def test_strategies_find_the_head_by_its_output():
    torch.manual_seed(0)
    first = HeadFirst()
    last = HeadLast(first)
    pool, labeled = _data()
    for strategy in (BADGE(seed=1), Coreset(seed=1)):
        assert strategy.select(first, pool, labeled, 5).positions.tolist() == \
            strategy.select(last, pool, labeled, 5).positions.tolist()
    dynamical = DynamicAL(params="last_layer")
    scores = dynamical.score(first, pool, labeled)
    assert [p.name for p in dynamical.explain(first, next(iter(pool)))] == ["head.weight", "head.bias"]
    x, (lab_x, lab_y) = pool.dataset.tensors[0], labeled.dataset.tensors
    ref = dynamical_scores(last.double(), x.double(), lab_x.double(), lab_y, 2.0, ["head.weight", "head.bias"])
    torch.testing.assert_close(scores.double(), ref, rtol=1e-5, atol=1e-7)


def test_last_layer_params_of_a_head_whose_output_is_not_the_logits_are_the_last_linears():
    """A temperature after the head (or GPT-2's last-token pick): params='last_layer' takes the last registered
    nn.Linear, as before, and scores its parameters exactly."""
    torch.manual_seed(0)
    model = HeadFirst(scale=0.5)
    pool, labeled = _data()
    scores = DynamicAL(params="last_layer").score(model, pool, labeled)
    x, (lab_x, lab_y) = pool.dataset.tensors[0], labeled.dataset.tensors
    names = ["body.0.weight", "body.0.bias"]  # HeadFirst registers the head first: the last nn.Linear is body.0
    ref = dynamical_scores(model.double(), x.double(), lab_x.double(), lab_y, 2.0, names)
    torch.testing.assert_close(scores.double(), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("strategy", [BADGE(), Coreset()])
def test_a_head_whose_output_is_not_the_logits_is_refused(strategy):
    pool, labeled = _data()
    with pytest.raises(ValueError, match=r"must be the output of one nn.Linear head.*no nn.Linear's output is them"):
        strategy.select(HeadFirst(scale=2.0), pool, labeled, 5)


def test_random_under_pool_subset_picks_over_the_whole_pool():
    """Thirty rounds of Random on a seeded subset of 200 out of 2000: every decile of the pool gets picks (with sorted
    subsets, the same ranks of every round's subset fell in a few deciles: none in 800-1400)."""
    scorer = PoolScorer(Random(seed=0), pool_subset=200, seed=0, query_size=10)
    unlabeled, picked = list(range(2000)), []
    for round in range(30):
        positions = scorer._positions(len(unlabeled), round)
        scores = Random(seed=0).score(None, DataLoader(TensorDataset(torch.zeros(len(positions), 1))), [])
        chosen = [unlabeled[positions[p]] for p in torch.sort(scores, descending=True, stable=True).indices[:10]]
        picked += chosen
        unlabeled = [i for i in unlabeled if i not in set(chosen)]
    per_decile = torch.histc(torch.tensor(picked, dtype=torch.float), bins=10, min=0, max=2000)
    assert per_decile.min() >= 10  # 30 expected per decile
