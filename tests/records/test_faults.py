"""Bad scores, small or empty pools, and exceptions mid-round: a clear error, and nothing lost."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.loggers import Logger

from lightning_dynamical import ActiveLearningLoop, NonFiniteScoresError
from lightning_dynamical.oracles.base import Oracle
from lightning_dynamical.strategies import Random, Strategy
from tests.helpers.tiny import fit_loop, toy_classifier, toy_datamodule


class NaNs(Strategy):
    def score(self, model, pool_loader, labeled_loader, **options):
        s = torch.ones(len(pool_loader.dataset))
        s[:3] = float("nan")
        s[3] = float("inf")
        return s


class Boom(Strategy):
    def score(self, model, pool_loader, labeled_loader, **options):
        raise RuntimeError("strategy exploded")


class BadOracle(Oracle):
    def label(self, datamodule, query):
        raise RuntimeError("oracle exploded")


class BadLogger(Logger):
    name, version = "bad", 0

    def log_hyperparams(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        if "al/round" in metrics:
            raise RuntimeError("logger exploded")


def test_non_finite_scores_fail_the_round(tmp_path):
    dm = toy_datamodule(batch_size=16)
    before = dm.state_dict()
    loop = ActiveLearningLoop(NaNs(), query_size=5, rounds=2, max_epochs_per_round=1)
    with pytest.raises(NonFiniteScoresError, match=r"Round 0: 4 of 50 pool scores are NaN or inf"):
        fit_loop(toy_classifier(), dm, loop, tmp_path)
    assert dm.state_dict() == before


@pytest.mark.parametrize("where", ["strategy", "oracle", "logger"])
def test_exception_mid_round_leaves_datamodule_as_before(tmp_path, where):
    dm = toy_datamodule(batch_size=16)
    before = dm.state_dict()
    loop = ActiveLearningLoop(Boom() if where == "strategy" else Random(), query_size=5, rounds=2,
                              max_epochs_per_round=1, oracle=BadOracle() if where == "oracle" else None)
    with pytest.raises(RuntimeError, match=f"{where} exploded"):
        fit_loop(toy_classifier(), dm, loop, tmp_path, logger=[BadLogger()] if where == "logger" else False)
    assert dm.state_dict() == before


def test_small_pool_takes_what_remains_then_stops(tmp_path):
    dm = toy_datamodule(30, batch_size=16)  # 10 labeled, 20 in the pool
    loop = ActiveLearningLoop(Random(), query_size=8, rounds=5, max_epochs_per_round=1)
    with pytest.warns(UserWarning, match="only 4 pool samples remain"):
        fit_loop(toy_classifier(), dm, loop, tmp_path)
    assert [row["labeled"] for row in loop.history] == [10, 18, 26, 30]
    assert dm.num_unlabeled == 0 and loop.finished


def test_empty_pool_stops_with_message(tmp_path, caplog):
    dm = toy_datamodule(18, batch_size=16)
    loop = ActiveLearningLoop(Random(), query_size=8, rounds=4, max_epochs_per_round=1)
    with caplog.at_level("INFO"):
        fit_loop(toy_classifier(), dm, loop, tmp_path)
    assert [row["labeled"] for row in loop.history] == [10, 18]
    assert "pool is empty after round 1" in caplog.text
