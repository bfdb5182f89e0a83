"""Bad configuration fails at setup with a message naming the problem, before any state changes."""

from __future__ import annotations

import pytest
from torch import nn
from torch.utils.data import DataLoader

from lightning_dynamical import ActiveLearningLoop, Classifier
from lightning_dynamical.errors import ConfigError
from tests.helpers.tiny import fit_loop, quiet_trainer, toy_classifier, toy_datamodule, toy_dataset


@pytest.mark.parametrize("kwargs, match", [
    ({"query_size": 0}, r"^query_size must be a positive int \(>= 1\), got 0$"),
    ({"query_size": -3}, "query_size must be a positive int"),
    ({"rounds": 0}, r"^rounds must be a positive int \(>= 1\), got 0$"),
    ({"reset": "sometimes"}, r"^reset must be one of 'none', 'init', 'optimizer'; got 'sometimes'$"),
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
    dm = toy_datamodule(classes=3)
    before = dm.state_dict()
    with pytest.raises(ConfigError, match="query_size=51 is larger than the unlabeled pool of 50"):
        fit_loop(toy_classifier(3), dm, ActiveLearningLoop(query_size=51, rounds=1), tmp_path)
    assert dm.state_dict() == before


class _Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x).reshape(-1)


def test_model_output_not_batch_by_classes(tmp_path):
    dm = toy_datamodule(classes=3)
    before = dm.state_dict()
    with pytest.raises(ValueError, match=r"logits of shape \(batch, classes\).*got \(6,\)"):
        fit_loop(Classifier(_Flat(), num_classes=3), dm, ActiveLearningLoop(query_size=5, rounds=1), tmp_path)
    assert dm.state_dict() == before


def test_needs_active_learning_datamodule(tmp_path):
    trainer = quiet_trainer(tmp_path, [ActiveLearningLoop(query_size=5, rounds=1)], max_epochs=1)
    loader = DataLoader(toy_dataset(8, classes=3))
    with pytest.raises(TypeError, match="needs an ActiveLearningDataModule"):
        trainer.fit(toy_classifier(3), train_dataloaders=loader)
