"""ActiveLearningDataModule: split invariants, label() validation, loaders, state round trip."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import ActiveLearningDataModule, LabelError
from tests.helpers.tiny import toy_datamodule


def _dm(n: int = 100, **kw) -> ActiveLearningDataModule:
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(n) % 5
    kw.setdefault("initial_size", 10)
    return ActiveLearningDataModule(TensorDataset(x, y), **kw)


def _invariants(dm: ActiveLearningDataModule, n: int) -> None:
    lab, unl = set(dm.labeled_indices), set(dm.unlabeled_indices)
    assert not lab & unl
    assert lab | unl | set(dm._val_indices) == set(range(n))
    assert dm.num_labeled + dm.num_unlabeled + len(dm._val_indices) == n
    assert dm.unlabeled_indices == sorted(dm.unlabeled_indices)


def test_initial_split_is_seeded_and_consistent():
    a, b, c = _dm(seed=1), _dm(seed=1), _dm(seed=2)
    assert a.labeled_indices == b.labeled_indices != c.labeled_indices
    assert a.num_labeled == 10
    _invariants(a, 100)


def test_balanced_initial_set():
    dm = _dm(initial_size=15, balanced=True)
    labels = torch.arange(100)[dm.labeled_indices] % 5
    assert torch.bincount(labels, minlength=5).tolist() == [3] * 5


def test_label_moves_indices_and_loaders_follow():
    dm = _dm()
    new = dm.unlabeled_indices[:7]
    dm.label(new)
    _invariants(dm, 100)
    assert dm.num_labeled == 17 and set(new) <= set(dm.labeled_indices)
    served = torch.cat([b[0] for b in dm.train_dataloader()]).squeeze(1).long()
    assert sorted(served.tolist()) == sorted(dm.labeled_indices)
    pool = torch.cat([b[0] for b in dm.pool_dataloader()]).squeeze(1).long()
    assert pool.tolist() == dm.unlabeled_indices


@pytest.mark.parametrize("bad, match", [([1000], "not in the pool"), ([-1], "not in the pool"),
                                        (None, "already labeled"), ("dup", "repeated")])
def test_rejected_label_changes_nothing(bad, match):
    dm = _dm()
    if bad is None:
        bad = [dm.unlabeled_indices[0], dm.labeled_indices[0]]
    elif bad == "dup":
        bad = [dm.unlabeled_indices[0], dm.unlabeled_indices[1], dm.unlabeled_indices[0]]
    before = dm.state_dict()
    with pytest.raises(LabelError, match=match):
        dm.label(bad)
    assert dm.state_dict() == before


def test_wrong_label_count_changes_nothing():
    dm = _dm()
    before = dm.state_dict()
    with pytest.raises(LabelError, match="labels"):
        dm.label(dm.unlabeled_indices[:3], [1, 2])
    assert dm.state_dict() == before


def test_oracle_labels_replace_targets():
    dm = _dm()
    i = dm.unlabeled_indices[0]
    dm.label([i], [4 if i % 5 != 4 else 3])
    pairs = {int(x): int(y) for b in dm.train_dataloader() for x, y in zip(b[0].squeeze(1), b[1])}
    assert pairs[i] != i % 5


def test_state_round_trip_and_validation():
    dm = _dm(val_size=0.2)
    dm.label(dm.unlabeled_indices[5:9])
    state = dm.state_dict()
    fresh = _dm(val_size=0.2, seed=9)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert fresh.unlabeled_indices == dm.unlabeled_indices
    for bad in ({**state, "dataset_size": 5}, {**state, "labeled": state["labeled"] + [state["labeled"][0]]},
                {**state, "labeled": [10_000]}):
        with pytest.raises(LabelError):
            fresh.load_state_dict(bad)
        assert fresh.state_dict() == state


def test_val_split_is_held_out():
    dm = _dm(val_size=20)
    _invariants(dm, 100)
    assert len(dm.val_dataset) == 20
    assert not set(dm._val_indices) & set(dm.labeled_indices + dm.unlabeled_indices)


def test_bad_arguments():
    with pytest.raises(ValueError, match="initial_size"):
        _dm(initial_size=0)
    with pytest.raises(ValueError, match="exceeds"):
        _dm(initial_size=101)


class _UserDM(LightningDataModule):
    def setup(self, stage=None):
        self.train = TensorDataset(torch.randn(50, 3), torch.arange(50) % 2)
        self.test = TensorDataset(torch.randn(10, 3), torch.arange(10) % 2)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=7, shuffle=True)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=7)


def test_from_datamodule_wraps_train_and_keeps_test():
    dm = ActiveLearningDataModule.from_datamodule(_UserDM(), initial_size=5)
    assert dm.num_labeled == 5 and dm.num_unlabeled == 45
    assert dm.batch_size == 7
    assert len(dm.splits.test) == 10 and dm.splits.val is None


def test_iterating_evaluation_loaders_leaves_the_global_rng_alone():
    """Scoring, evaluation and a logger's charts iterate them: drawing from the global RNG there made a run with a
    W&B logger train differently (its dropout) from the same run without."""
    dm = toy_datamodule()
    before = torch.get_rng_state()
    for _ in range(3):
        list(dm.eval_loader(dm.pool_dataset()))
    assert torch.equal(before, torch.get_rng_state())
