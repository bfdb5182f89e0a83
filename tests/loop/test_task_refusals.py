"""What does not fit the data module's task is refused at fit start, before any epoch, instead of running every round
with the outputs read as class logits: multi-label or regression targets under classification, single-output models,
and a model whose output is not the task's logits."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, ConfigError, Random
from tests.helpers.tiny import fit_loop

pytestmark = pytest.mark.usefixtures("one_thread")


class Epochs(L.Callback):
    def __init__(self) -> None:
        self.started = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self.started += 1


def _fit(tmp_path, targets: torch.Tensor, outputs: int, num_classes: int = 2):
    x = torch.randn(len(targets), 4, generator=torch.Generator().manual_seed(0))
    dm = ActiveLearningDataModule(TensorDataset(x, targets), test=TensorDataset(x[:8], targets[:8]), initial_size=8,
                                  num_classes=num_classes)
    loop = ActiveLearningLoop(Random(), query_size=4, rounds=1, dirpath=str(tmp_path), verbose=False)
    epochs = Epochs()
    with pytest.raises(ConfigError) as info:
        fit_loop(Classifier(nn.Linear(4, outputs), num_classes=max(outputs, 2)), dm, loop, tmp_path, [epochs])
    assert epochs.started == 0 and dm.num_labeled == 8 and not (tmp_path / "al_rounds.csv").exists()
    return str(info.value)


def test_multi_label_targets_are_refused(tmp_path):
    targets = (torch.rand(32, 3, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    message = _fit(tmp_path, targets, outputs=3, num_classes=3)
    assert message.startswith("pool: its labeled samples have float32 targets of shape (2, 3), but the "
                              "classification task needs one int class index per sample, shape (batch,)")
    assert "task=..." in message and "'multilabel'" in message and "\n" not in message


def test_regression_targets_and_a_single_output_are_refused(tmp_path):
    message = _fit(tmp_path / "float", torch.randn(32), outputs=2)
    assert "float32 targets of shape (2,)" in message
    message = _fit(tmp_path / "single", torch.randint(0, 2, (32,)), outputs=1)
    assert message.startswith("the model outputs 1 value per sample, but the classification task needs one logit per "
                              "class (at least 2)")
    assert "pseudo-target gradient is zero" in message
