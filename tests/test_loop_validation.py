"""Bad configuration fails at setup with a message naming the problem, before any state changes."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier
from lightning_dynamical.errors import ConfigError


def _dm() -> ActiveLearningDataModule:
    x, y = torch.randn(60, 4), torch.arange(60) % 3
    return ActiveLearningDataModule(TensorDataset(x, y), test=TensorDataset(x[:10], y[:10]), initial_size=10)


def _fit(net: nn.Module, loop: ActiveLearningLoop, dm: ActiveLearningDataModule, tmp_path) -> None:
    trainer = L.Trainer(max_epochs=-1, callbacks=[loop], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Classifier(net, num_classes=3), datamodule=dm)


@pytest.mark.parametrize("kwargs, match", [
    ({"query_size": 0}, r"^query_size must be a positive int \(>= 1\), got 0$"),
    ({"query_size": -3}, "query_size must be a positive int"),
    ({"rounds": 0}, r"^rounds must be a positive int \(>= 1\), got 0$"),
    ({"reset": "sometimes"}, r"^reset must be one of 'none', 'init'; got 'sometimes'$"),
    ({"pool_subset": 2, "query_size": 5}, r"^pool_subset must be null or an int >= query_size \(5\), got 2$"),
    ({"max_epochs_per_round": 0}, r"^max_epochs_per_round must be a positive int \(>= 1\), got 0$"),
    ({"min_epochs_per_round": 30, "max_epochs_per_round": 20},
     r"^min_epochs_per_round must be an int from 1 to max_epochs_per_round \(20\), got 30$"),
    ({"train_acc_threshold": 1.5}, r"^train_acc_threshold must be null or a number in \(0, 1\], got 1.5$"),
    ({"patience": 0}, r"^patience must be a positive int \(>= 1\), got 0$"),
    ({"min_delta": -1.0}, r"^min_delta must be a number >= 0, got -1.0$"),
])
def test_bad_arguments_rejected(kwargs, match):
    """Each message names the loop's own argument, what was given and what is allowed; ConfigError is a ValueError."""
    with pytest.raises(ConfigError, match=match):
        ActiveLearningLoop(**kwargs)


def test_query_size_larger_than_pool(tmp_path):
    dm = _dm()
    before = dm.state_dict()
    with pytest.raises(ConfigError, match="query_size=51 is larger than the unlabeled pool of 50"):
        _fit(nn.Linear(4, 3), ActiveLearningLoop(query_size=51, rounds=1), dm, tmp_path)
    assert dm.state_dict() == before


class _Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x).reshape(-1)


def test_model_output_not_batch_by_classes(tmp_path):
    dm = _dm()
    before = dm.state_dict()
    with pytest.raises(ValueError, match=r"logits of shape \(batch, classes\).*got \(6,\)"):
        _fit(_Flat(), ActiveLearningLoop(query_size=5, rounds=1), dm, tmp_path)
    assert dm.state_dict() == before


def test_needs_active_learning_datamodule(tmp_path):
    trainer = L.Trainer(max_epochs=1, callbacks=[ActiveLearningLoop(query_size=5, rounds=1)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    loader = torch.utils.data.DataLoader(TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(TypeError, match="needs an ActiveLearningDataModule"):
        trainer.fit(Classifier(nn.Linear(4, 3), num_classes=3), train_dataloaders=loader)
