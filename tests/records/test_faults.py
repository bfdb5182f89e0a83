"""Bad scores, small or empty pools, and exceptions mid-round: a clear error, and nothing lost."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, DynamicAL, NonFiniteScoresError
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


class _EpochRounds(L.Callback):
    """The loop's round at the start of every training epoch."""

    def __init__(self, loop: ActiveLearningLoop) -> None:
        self.loop, self.rounds = loop, []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.rounds.append(self.loop.round)


@pytest.mark.usefixtures("one_thread")
def test_nan_pool_sample_named_and_its_round_rescored_after_repair_without_retraining(tmp_path):
    dm = toy_datamodule(batch_size=16)
    x = dm.splits.pool.tensors[0]
    bad = next(i for i in dm.unlabeled_indices if i >= 10)  # not in the test set (the first 10 points)
    kept, before = x[bad].clone(), dm.state_dict()
    x[bad] = float("nan")
    loop = ActiveLearningLoop(DynamicAL(), query_size=5, rounds=2, max_epochs_per_round=1, dirpath=str(tmp_path),
                              verbose=False)
    with pytest.raises(NonFiniteScoresError, match=rf"^Round 0: 1 of 50 pool scores are NaN or inf, at pool indices "
                                                   rf"\[{bad}\]; the labeled set is unchanged; the round's trained "
                                                   r"weights are saved in .*al_rescore_round_0\.ckpt") as info:
        fit_loop(toy_classifier(), dm, loop, tmp_path)
    err = info.value
    assert err.indices == [bad] and err.checkpoint == str(tmp_path / "al_rescore_round_0.ckpt")
    assert f"resume with ckpt_path={err.checkpoint!r}" in str(err) and dm.state_dict() == before
    trained = torch.load(err.checkpoint, weights_only=False)
    assert trained["callbacks"]["ActiveLearningLoop"]["rescore"] is True

    x[bad] = kept  # repaired in place; a fresh run resumes from the checkpoint
    model = toy_classifier()
    model.load_state_dict(trained["state_dict"])
    expected = DynamicAL().select(model, dm.pool_dataloader(), dm.eval_loader(dm.labeled_dataset(evaluation=True)), 5)
    dm2 = ActiveLearningDataModule(dm.splits.pool, test=dm.splits.test, initial_size=10, batch_size=16)
    loop2 = ActiveLearningLoop(DynamicAL(), query_size=5, rounds=2, max_epochs_per_round=1, dirpath=str(tmp_path),
                               verbose=False)
    epochs = _EpochRounds(loop2)
    fit_loop(toy_classifier(), dm2, loop2, tmp_path, callbacks=[epochs], ckpt_path=err.checkpoint)
    assert epochs.rounds and 0 not in epochs.rounds  # round 0 was not trained again
    assert [row["labeled"] for row in loop2.history] == [10, 15, 20] and loop2.finished
    assert dm2.labeled_indices[10:15] == dm.pool_indices(expected.positions.tolist())  # scored with the saved weights
