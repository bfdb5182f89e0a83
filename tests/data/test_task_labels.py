"""Labels beyond one class per sample: masks given to ``label()`` are checked (size, classes, dtype) before anything
changes, served in place of the data set's own, and kept in the state (al_state.json and checkpoints) exactly."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ConfigError
from lightning_dynamical.data.datamodule import LabelError
from lightning_dynamical.tasks import Segmentation


def _masks_dm(**kwargs) -> ActiveLearningDataModule:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 1, 4, 5, generator=gen), torch.randint(0, 3, (12, 4, 5), generator=gen)
    return ActiveLearningDataModule(TensorDataset(x, y), initial_size=4, task=Segmentation(ignore_index=255),
                                    num_classes=3, **kwargs)


def test_masks_are_served_in_place_of_the_data_sets_and_survive_the_state():
    dm = _masks_dm()
    index = dm.unlabeled_indices[0]
    mask = torch.full((4, 5), 255)
    mask[1, 2] = 2
    dm.label([index], [mask.numpy()])
    served = dm.labeled_dataset()[dm.labeled_indices.index(index)][1]
    assert torch.equal(served, mask)
    state = json.loads(json.dumps(dm.state_dict()))  # what al_state.json holds
    assert isinstance(state["given_labels"][0][1], str)
    again = _masks_dm()
    again.load_state_dict(state)
    assert torch.equal(again.labeled_dataset()[again.labeled_indices.index(index)][1], mask)


@pytest.mark.parametrize(("label", "problem"), [
    (torch.zeros(4, 4, dtype=torch.long), "shape (4, 4), expected (4, 5)"),
    (torch.full((4, 5), 3), "classes outside 0..2"),
    (torch.zeros(4, 5), "dtype float"),
])
def test_bad_masks_are_refused_and_nothing_changes(label, problem):
    dm = _masks_dm()
    before = dm.state_dict()
    index = dm.unlabeled_indices[0]
    with pytest.raises(LabelError, match="do not fit the segmentation task") as info:
        dm.label([dm.unlabeled_indices[1], index], [torch.zeros(4, 5, dtype=torch.long), label])
    assert problem in str(info.value) and f"index {index}" in str(info.value)
    assert dm.state_dict() == before


def test_a_state_with_a_mask_that_does_not_fit_is_refused():
    dm = _masks_dm()
    state = dm.state_dict()
    state["given_labels"] = [[state["labeled"][0], Segmentation().encode_label(torch.zeros(2, 2, dtype=torch.long))]]
    with pytest.raises(LabelError, match="state's given_labels: 1 labels do not fit"):
        _masks_dm().load_state_dict(state)
    state["given_labels"] = [[state["labeled"][0], "4x5:garbage"]]
    with pytest.raises(LabelError, match="not an encoded label tensor"):
        _masks_dm().load_state_dict(state)


def test_classification_labels_and_states_are_as_before():
    x, y = torch.randn(10, 2), torch.randint(0, 3, (10,))
    dm = ActiveLearningDataModule(TensorDataset(x, y), initial_size=2, num_classes=3)
    index = dm.unlabeled_indices[0]
    dm.label([index], ["2"])  # anything int() takes, as before tasks
    assert dm.state_dict()["given_labels"] == [[index, 2]]
    with pytest.raises(LabelError, match="are not classes 0..2"):
        dm.label([dm.unlabeled_indices[0]], [5])


def test_balanced_draws_need_classes():
    with pytest.raises(ConfigError, match="balanced=True .* segmentation task has none"):
        _masks_dm(balanced=True)


class _Flipping(torch.utils.data.Dataset):
    """Images equal to their masks, flipped (image and own mask together) on every read: a joint training transform."""

    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int):
        mask = self.masks[i].flip(-1)
        return mask.unsqueeze(0).float(), mask


def test_given_masks_train_aligned_with_their_images_when_the_pool_augments():
    masks = torch.randint(0, 2, (12, 4, 5), generator=torch.Generator().manual_seed(3))
    plain = TensorDataset(masks.unsqueeze(1).float(), masks)
    dm = ActiveLearningDataModule(_Flipping(masks), pool_eval=plain, initial_size=4, task="segmentation",
                                  num_classes=2)
    index = dm.unlabeled_indices[0]
    dm.label([index], [masks[index]])
    image, mask = dm.labeled_dataset()[dm.labeled_indices.index(index)]
    assert torch.equal(image[0].long(), mask)  # read from the evaluation view: the given mask fits the image
    own = dm.labeled_indices[0]
    image, mask = dm.labeled_dataset()[0]
    assert torch.equal(image[0].long(), mask) and not torch.equal(mask, masks[own])  # own labels keep augmenting


def test_given_labels_take_the_data_sets_target_dtype():
    import numpy as np

    dm = _masks_dm()
    index = dm.unlabeled_indices[0]
    dm.label([index], [np.zeros((4, 5), dtype=np.uint8)])
    assert dm.labeled_dataset()[dm.labeled_indices.index(index)][1].dtype == torch.int64
    x = torch.randn(10, 3)
    multi = ActiveLearningDataModule(TensorDataset(x, (x > 0).float()), initial_size=2, task="multilabel")
    multi.label([multi.unlabeled_indices[0]], [[1, 0, 1]])
    assert multi.labeled_dataset()[2][1].dtype == torch.float32
    classes = ActiveLearningDataModule(TensorDataset(x, torch.arange(10) % 3), initial_size=2, num_classes=3)
    classes.label(classes.unlabeled_indices[:2], np.array([1, 2], dtype=np.int32))
    assert classes.labeled_dataset()[2][1].dtype == torch.int64
    with pytest.raises(LabelError, match=r"shape \(1,\), expected \(\)"):
        classes.label([classes.unlabeled_indices[0]], [[1]])


def test_a_mask_value_the_data_sets_dtype_cannot_hold_is_refused():
    """``-100`` (the default ignore_index) in a data set of ``uint8`` masks would wrap to class 156."""
    x, y = torch.randn(8, 1, 2, 3), torch.randint(0, 2, (8, 2, 3), dtype=torch.uint8)
    dm = ActiveLearningDataModule(TensorDataset(x, y), initial_size=2, task="segmentation")
    before = dm.state_dict()
    index = dm.unlabeled_indices[0]
    with pytest.raises(LabelError, match="value -100 does not fit the data set's uint8 targets"):
        dm.label([index], [torch.tensor([[0, -100, 1], [1, 1, -100]])])
    assert dm.state_dict() == before
    dm.label([index], [torch.tensor([[0, 1, 1], [1, 1, 0]])])
    assert dm.labeled_dataset()[dm.labeled_indices.index(index)][1].dtype == torch.uint8


@pytest.mark.parametrize(("label", "problem"), [(2.7, "dtype float"), (True, "dtype bool")])
def test_a_python_float_or_bool_is_not_read_as_a_class(label, problem):
    x, y = torch.randn(10, 2), torch.randint(0, 3, (10,))
    dm = ActiveLearningDataModule(TensorDataset(x, y), initial_size=2, num_classes=3)
    with pytest.raises(LabelError, match=problem):
        dm.label([dm.unlabeled_indices[0]], [label])
    assert dm.num_labeled == 2


def test_balanced_draws_probability_targets_by_their_most_likely_class():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=gen), torch.softmax(3 * torch.randn(30, 3, generator=gen), 1)
    dm = ActiveLearningDataModule(TensorDataset(x, y), initial_size=6, balanced=True)
    assert sorted(y.argmax(1)[dm.labeled_indices].tolist()) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ConfigError, match=r"one class per sample; the data set's targets have shape \(30, 3\)"):
        ActiveLearningDataModule(TensorDataset(x, (y > 0.3).long()), initial_size=6, balanced=True)
