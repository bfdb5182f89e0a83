"""The loop on a segmentation task named once on the data module: the strategy, the model's loss and metrics, the
round rows (mean IoU as the headline), al_queries.csv and the state all follow it; what does not fit is refused at
fit start, before any epoch."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, ConfigError, DynamicAL
from lightning_dynamical.models import UNet
from lightning_dynamical.strategies import BALD, Entropy
from lightning_dynamical.tasks import Segmentation
from tests.helpers.tiny import fit_loop, read_csv

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int = 48, seed: int = 0) -> TensorDataset:
    """Noisy 8x8 images whose mask is where a smoothed copy is positive (so a small U-Net can learn it)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=gen)
    smooth = nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    return TensorDataset(x, (smooth > 0).long().squeeze(1))


def _dm(**kwargs) -> ActiveLearningDataModule:
    data = _images()
    test = TensorDataset(*(t[:16] for t in _images(16, seed=1).tensors))
    return ActiveLearningDataModule(data, test=test, initial_size=8, batch_size=8, task="segmentation", **kwargs)


def test_a_segmentation_run_records_mean_iou_masks_and_a_recoverable_state(tmp_path, caplog):
    torch.manual_seed(0)
    dm = _dm()
    model = Classifier(UNet(1, 2, width=4, depth=1), lr=0.01)
    loop = ActiveLearningLoop(DynamicAL(), query_size=4, rounds=2, max_epochs_per_round=3, train_acc_threshold=None,
                              dirpath=str(tmp_path))
    with caplog.at_level("INFO", logger="lightning_dynamical"):
        trainer = fit_loop(model, dm, loop, tmp_path)
    assert isinstance(loop.strategy.task, Segmentation) and model.task is dm.task
    rows = read_csv(tmp_path / "al_rounds.csv")
    assert [r["metric"] for r in rows] == ["miou"] * 3 and [int(r["labeled"]) for r in rows] == [8, 12, 16]
    assert all(0 <= float(r["test_metric"]) <= 1 and 0 <= float(r["test_acc"]) <= 1 for r in rows)
    assert math.isfinite(float(rows[0]["query_approximation_ratio"]))  # measured with the task's loss
    queries = read_csv(tmp_path / "al_queries.csv")
    pool = dm.splits.pool_eval
    for q in queries:  # the label and pseudo label columns hold whole masks, decoded exactly
        assert torch.equal(dm.task.decode_label(q["label"]), pool[int(q["index"])][1])
        assert dm.task.decode_label(q["pseudo_label"]).shape == (8, 8)
    state = json.loads((tmp_path / "al_state.json").read_text())
    assert sorted(state["labeled"]) == sorted(dm.labeled_indices)
    assert "test_miou=" in caplog.text and "| test_miou |" in caplog.text
    assert {"train_miou", "train_acc"} <= set(trainer.callback_metrics)


def test_a_classification_model_on_a_segmentation_data_module_is_refused_before_any_epoch(tmp_path):
    loop = ActiveLearningLoop(DynamicAL(), query_size=4, rounds=1, dirpath=str(tmp_path), verbose=False)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ConfigError, match=r"logits of shape \(batch, classes, height, width\) for the segmentation "
                                          r"task .* got \(2, 2\) .*task is 'segmentation'"):
        fit_loop(Classifier(net), _dm(), loop, tmp_path)
    assert not (tmp_path / "al_rounds.csv").exists()


def test_masks_under_the_default_classification_task_are_refused_naming_the_task_option(tmp_path):
    data = _images()
    dm = ActiveLearningDataModule(data, initial_size=8)
    loop = ActiveLearningLoop(Entropy(), query_size=4, rounds=1, dirpath=str(tmp_path), verbose=False)
    with pytest.raises(ConfigError, match=r"int64 targets of shape \(2, 8, 8\), but the classification task needs "
                                          r"one int class index per sample.*'segmentation'"):
        fit_loop(Classifier(UNet(1, 2, width=4, depth=1)), dm, loop, tmp_path)


def test_a_strategy_that_does_not_apply_is_refused_at_setup(tmp_path):
    loop = ActiveLearningLoop(BALD(), query_size=4, rounds=1, dirpath=str(tmp_path), verbose=False)
    dm = _dm()
    with pytest.raises(ConfigError, match="BALD does not apply to the segmentation task"):
        fit_loop(Classifier(UNet(1, 2, width=4, depth=1)), dm, loop, tmp_path)
    assert dm.num_labeled == 8 and not (tmp_path / "al_rounds.csv").exists()
