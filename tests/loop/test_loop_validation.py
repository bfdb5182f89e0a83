"""Bad configuration fails at setup with a message naming the problem, before any state changes."""

from __future__ import annotations

import lightning as L
import pytest
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier
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


class _Reshaped(Dataset):
    """A toy dataset's items as ``form`` (``"dict"``: ``{"x", "labels"}``; ``"inputs"``: the input tensor alone) at
    ``where`` (every index when ``None``), as ``(x, y)`` elsewhere."""

    def __init__(self, base: Dataset, form: str, where: set[int] | None = None) -> None:
        self.base, self.form, self.where = base, form, where

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        if self.where is not None and i not in self.where:
            return x, y
        return {"x": x, "labels": y} if self.form == "dict" else x


class _Epochs(L.Callback):
    def __init__(self) -> None:
        self.started = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.started += 1


def _unlabeled_dicts() -> ActiveLearningDataModule:
    data = toy_dataset(60)
    items = _Reshaped(data, "dict", set())
    dm = ActiveLearningDataModule(items, initial_size=10, batch_size=16)
    items.where = set(dm.unlabeled_indices)  # labeled items stay tuples
    return dm


@pytest.mark.parametrize("make, match", [
    (lambda: ActiveLearningDataModule(toy_dataset(60), pool_eval=_Reshaped(toy_dataset(60), "inputs"),
                                      initial_size=10),
     r"^pool_eval: its labeled samples yield tensor batches \(inputs only\) without a target, but the labeled set is "
     r"evaluated and scored through pool_eval; give its items as \(inputs, target, \.\.\.\), or as dicts with the "
     r"target under 'labels'$"),
    (lambda: ActiveLearningDataModule(toy_dataset(60), pool_eval=_Reshaped(toy_dataset(60), "dict"), initial_size=10),
     r"^pool_eval: its labeled samples yield dict batches with keyword inputs \['x'\], but the labeled samples of "
     r"pool yield tuple/list batches \(x, \.\.\.\); every data set must give the model its inputs the same way$"),
    (_unlabeled_dicts, r"^pool: its unlabeled samples yield dict batches with keyword inputs \['x'\], but the "
                       r"labeled samples of pool yield tuple/list batches \(x, \.\.\.\)"),
    (lambda: ActiveLearningDataModule(toy_dataset(60), test=_Reshaped(toy_dataset(9), "inputs"), initial_size=10),
     r"^test: its samples yield tensor batches \(inputs only\) without a target, but each round measures test "
     r"accuracy"),
])
@pytest.mark.usefixtures("one_thread")
def test_batches_unlike_the_labeled_ones_fail_at_fit_start(tmp_path, make, match):
    """One line naming the data set argument, before any epoch and with the split unchanged."""
    dm = make()
    before, epochs = dm.state_dict(), _Epochs()
    with pytest.raises(ConfigError, match=match) as info:
        fit_loop(toy_classifier(), dm, ActiveLearningLoop(query_size=5, rounds=1), tmp_path, callbacks=[epochs])
    assert "\n" not in str(info.value) and epochs.started == 0 and dm.state_dict() == before
