"""Class ids are checked wherever labels enter, before anything changes: ``label()``, ``load_state_dict``,
``resume_from_state`` and the model's logit width at fit start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, LabelError, Random
from lightning_dynamical.data import DigitsDataModule
from lightning_dynamical.records.weights import restore_weights
from tests.helpers.models import TinyCNN
from tests.helpers.tiny import digest, fit_loop, toy_datamodule


def _dm(**kw) -> ActiveLearningDataModule:
    """60 toy points in 3 classes, 10 labeled, no test set."""
    return toy_datamodule(classes=3, test_size=0, **kw)


@pytest.mark.parametrize("dm", [_dm(num_classes=3), DigitsDataModule(initial_size=10)], ids=["explicit", "dataset"])
def test_label_with_an_unknown_class_changes_nothing(dm) -> None:
    dm.setup()
    classes = dm.num_classes
    new = dm.unlabeled_indices[:2]
    before = dm.state_dict()
    for bad in (42, classes, -1):
        with pytest.raises(LabelError, match=rf"label\(\) refused: 1 labels are not classes 0..{classes - 1} "
                                             rf"\(index {new[1]}: {bad}\)"):
            dm.label(new, [0, bad])
        assert dm.state_dict() == before
    dm.label(new, [0, classes - 1])
    assert dm.num_labeled == 12


def test_classes_from_the_model_when_the_data_has_none() -> None:
    dm = _dm()
    dm.setup()
    assert dm.num_classes is None
    dm.label(dm.unlabeled_indices[:1], [7])  # nothing to check against yet
    before = dm.state_dict()
    with pytest.raises(LabelError, match="labels given so far: 1 labels are not classes 0..4"):
        dm.use_model_classes(5)
    assert dm.state_dict() == before and dm.num_classes is None
    dm.use_model_classes(8)
    assert dm.num_classes == 8
    with pytest.raises(LabelError, match="not classes 0..7"):
        dm.label(dm.unlabeled_indices[:1], [8])
    with pytest.raises(LabelError, match="the model outputs 2 logits but the data has 3 classes"):
        _dm(num_classes=3).use_model_classes(2)


def test_state_with_bad_given_labels_refused() -> None:
    dm = _dm(num_classes=3)
    dm.setup()
    i = dm.unlabeled_indices[0]
    dm.label([i], [2])
    state = dm.state_dict()
    fresh = _dm(num_classes=3)
    fresh.setup()
    before = fresh.state_dict()
    for bad, match in [({**state, "given_labels": [[i, 3]]}, r"state's given_labels: 1 labels are not classes"),
                       ({**state, "given_labels": [[dm.unlabeled_indices[0], 1]]}, "unlabeled or repeated"),
                       ({**state, "given_labels": [[i, 1], [i, 2]]}, "unlabeled or repeated")]:
        with pytest.raises(LabelError, match=match):
            fresh.load_state_dict(bad)
        assert fresh.state_dict() == before
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state


def _state_file(tmp_path: Path, dm: ActiveLearningDataModule, label: int) -> Path:
    """An al_state.json at round 1 with one given label and round 0's history row."""
    dm.setup()
    i = dm.unlabeled_indices[0]
    path = tmp_path / "al_state.json"
    path.write_text(json.dumps({
        "round": 1, "dataset_size": len(dm.splits.pool), "labeled": [*dm.labeled_indices, i],
        "given_labels": [[i, label]], "weights": None,
        "history": [{"round": 0, "labeled": 10, "pool": 1, "test_acc": 0.5, "score_seconds": 0.1, "epochs": 1}]}))
    return path


def _fit(tmp_path: Path, dm: ActiveLearningDataModule, model: nn.Module, state: Path | None = None) -> None:
    loop = ActiveLearningLoop(Random(), query_size=5, rounds=2, max_epochs_per_round=1, dirpath=str(tmp_path),
                              resume_from_state=None if state is None else str(state), verbose=False)
    fit_loop(Classifier(model, num_classes=10), dm, loop, tmp_path)


@pytest.mark.parametrize(("make", "model", "match"), [
    (lambda: DigitsDataModule(initial_size=10), TinyCNN(1, 10), "state's given_labels: 1 labels are not classes 0..9"),
    (_dm, nn.Linear(4, 3), "labels given so far: 1 labels are not classes 0..2"),
], ids=["data-classes", "model-width"])
def test_resume_from_state_with_an_unknown_class_changes_nothing(tmp_path, make, model, match) -> None:
    dm = make()
    state = _state_file(tmp_path, dm, label=42)
    before = digest(state)
    with pytest.raises(LabelError, match=match):
        _fit(tmp_path, make(), model, state)
    assert digest(state) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["al_state.json"]


def test_model_with_fewer_logits_than_classes_refused(tmp_path) -> None:
    with pytest.raises(LabelError, match="the model outputs 5 logits but the data has 10 classes"):
        _fit(tmp_path, DigitsDataModule(initial_size=10), TinyCNN(1, 5))


def test_restore_weights_loads_refuses_or_says_it_cannot(tmp_path) -> None:
    model, other = Classifier(nn.Linear(4, 3), num_classes=3), Classifier(nn.Linear(4, 5), num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = str(tmp_path / "al_state.json")
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.ckpt")
    with pytest.raises(RuntimeError, match=r"other\.ckpt \(named by .*al_state\.json\) do not fit this model: "
                                           r"other shapes for \['net.weight', 'net.bias'\]; nothing was changed"):
        restore_weights(model, "other.ckpt", state, 1)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.warns(UserWarning, match=r"cannot restore the weights of the last round: .*gone\.ckpt .*does not "
                                         r"exist here; round 1 starts from the model's current weights"):
        assert not restore_weights(model, "gone.ckpt", state, 1)
    same = Classifier(nn.Linear(4, 3), num_classes=3)
    torch.save({"state_dict": same.state_dict()}, tmp_path / "same.ckpt")
    assert restore_weights(model, str(tmp_path / "same.ckpt"), state, 1)
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in model.state_dict().items())
