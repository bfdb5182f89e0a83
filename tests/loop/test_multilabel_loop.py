"""The loop on a multi-label task named once on the data module: BCE training, per-label accuracy and micro F1 in
the rows, 0/1 label vectors through ``label()``, the state and al_queries.csv."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, ConfigError, DynamicAL
from lightning_dynamical.data.datamodule import LabelError
from lightning_dynamical.strategies import Entropy, Margin
from lightning_dynamical.tasks import MultiLabel
from tests.helpers.tiny import fit_loop, read_csv

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 60, seed: int = 0) -> TensorDataset:
    """Label k is present where feature k is positive (3 labels, learnable by a linear model)."""
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x[:, :3] > 0).float())


def _dm() -> ActiveLearningDataModule:
    return ActiveLearningDataModule(_data(), test=_data(20, seed=1), initial_size=10, batch_size=10,
                                    task="multilabel")


@pytest.mark.parametrize("strategy", [DynamicAL(), Entropy()], ids=["dynamical", "entropy"])
def test_a_multilabel_run_records_f1_and_label_vectors(tmp_path, strategy):
    torch.manual_seed(0)
    dm = _dm()
    model = Classifier(nn.Linear(5, 3), lr=0.05)
    loop = ActiveLearningLoop(strategy, query_size=5, rounds=2, max_epochs_per_round=4, train_acc_threshold=None,
                              dirpath=str(tmp_path), verbose=False)
    trainer = fit_loop(model, dm, loop, tmp_path)
    assert isinstance(loop.strategy.task, MultiLabel)
    rows = read_csv(tmp_path / "al_rounds.csv")
    assert [r["metric"] for r in rows] == ["f1"] * 3 and [int(r["labeled"]) for r in rows] == [10, 15, 20]
    assert all(0 <= float(r["test_metric"]) <= 1 for r in rows)
    for q in read_csv(tmp_path / "al_queries.csv"):
        assert torch.equal(dm.task.decode_label(q["label"]).float(), dm.splits.pool[int(q["index"])][1])
    assert {"train_f1", "train_acc"} <= set(trainer.callback_metrics)


def test_label_vectors_are_checked_and_kept_in_the_state():
    dm = _dm()
    index = dm.unlabeled_indices[0]
    dm.label([index], [[1, 0, 1]])
    state = json.loads(json.dumps(dm.state_dict()))
    fresh = _dm()
    fresh.load_state_dict(state)
    assert fresh.labeled_dataset()[fresh.labeled_indices.index(index)][1].tolist() == [1, 0, 1]
    with pytest.raises(LabelError, match=r"shape \(2,\), expected \(3,\)"):
        dm.label([dm.unlabeled_indices[0]], [[1, 0]])
    with pytest.raises(LabelError, match="values other than 0 and 1"):
        dm.label([dm.unlabeled_indices[0]], [[2, 0, 1]])


def test_margin_is_refused_for_multilabel_at_setup(tmp_path):
    loop = ActiveLearningLoop(Margin(), query_size=5, rounds=1, dirpath=str(tmp_path), verbose=False)
    with pytest.raises(ConfigError, match="Margin does not apply to the multi-label task"):
        fit_loop(Classifier(nn.Linear(5, 3)), _dm(), loop, tmp_path)


def test_a_reloaded_classifier_keeps_the_data_modules_task_and_a_different_task_is_refused(tmp_path):
    dm = _dm()
    model = Classifier(nn.Linear(5, 3), lr=0.05)
    loop = ActiveLearningLoop(DynamicAL(), query_size=5, rounds=1, max_epochs_per_round=1, train_acc_threshold=None,
                              dirpath=str(tmp_path), verbose=False)
    fit_loop(model, dm, loop, tmp_path)
    reloaded = Classifier.load_from_checkpoint(loop.final_checkpoint, net=nn.Linear(5, 3), weights_only=False)
    assert isinstance(reloaded.task, MultiLabel)
    loop = ActiveLearningLoop(DynamicAL(), query_size=5, rounds=1, dirpath=str(tmp_path / "again"), verbose=False)
    with pytest.raises(ConfigError, match=r"Classifier\(task=Classification\(\)\) differs from the data module's"):
        fit_loop(Classifier(nn.Linear(5, 3), task="classification"), _dm(), loop, tmp_path / "again")
