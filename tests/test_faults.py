"""Bad scores, small or empty pools, and exceptions mid-round: a clear error, and nothing lost."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, NonFiniteScoresError
from lightning_dynamical.oracle import Oracle
from lightning_dynamical.strategies import Random, Strategy


def _dm(n: int = 60) -> ActiveLearningDataModule:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return ActiveLearningDataModule(TensorDataset(x, y), test=TensorDataset(x[:10], y[:10]), initial_size=10,
                                    batch_size=16)


def _fit(loop, dm, tmp_path, loggers=False):
    trainer = L.Trainer(max_epochs=-1, callbacks=[loop], logger=loggers, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Classifier(nn.Linear(4, 2), num_classes=2), datamodule=dm)
    return trainer


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
    dm = _dm()
    before = dm.state_dict()
    with pytest.raises(NonFiniteScoresError, match=r"Round 0: 4 of 50 pool scores are NaN or inf"):
        _fit(ActiveLearningLoop(NaNs(), query_size=5, rounds=2, max_epochs_per_round=1), dm, tmp_path)
    assert dm.state_dict() == before


@pytest.mark.parametrize("where", ["strategy", "oracle", "logger"])
def test_exception_mid_round_leaves_datamodule_as_before(tmp_path, where):
    dm = _dm()
    before = dm.state_dict()
    loop = ActiveLearningLoop(Boom() if where == "strategy" else Random(), query_size=5, rounds=2,
                              max_epochs_per_round=1, oracle=BadOracle() if where == "oracle" else None)
    with pytest.raises(RuntimeError, match=f"{where} exploded"):
        _fit(loop, dm, tmp_path, loggers=[BadLogger()] if where == "logger" else False)
    assert dm.state_dict() == before


def test_small_pool_takes_what_remains_then_stops(tmp_path):
    dm = _dm(30)  # 10 labeled, 20 in the pool
    loop = ActiveLearningLoop(Random(), query_size=8, rounds=5, max_epochs_per_round=1)
    with pytest.warns(UserWarning, match="only 4 pool samples remain"):
        _fit(loop, dm, tmp_path)
    assert [row["labeled"] for row in loop.history] == [10, 18, 26, 30]
    assert dm.num_unlabeled == 0 and loop.finished


def test_empty_pool_stops_with_message(tmp_path, caplog):
    dm = _dm(18)
    loop = ActiveLearningLoop(Random(), query_size=8, rounds=4, max_epochs_per_round=1)
    with caplog.at_level("INFO"):
        _fit(loop, dm, tmp_path)
    assert [row["labeled"] for row in loop.history] == [10, 18]
    assert "pool is empty after round 1" in caplog.text
