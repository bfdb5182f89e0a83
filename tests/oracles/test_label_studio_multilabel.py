"""LabelStudioOracle for the multi-label task against a real Label Studio server: a multiple-choice project, the
model's predicted label set preselected, annotators' sets (the empty set too) back as the 0/1 vectors trained on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything
from torch import nn
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, LabelStudioOracle, Random
from lightning_dynamical.oracles.base import Query
from lightning_dynamical.oracles.files import LabelFileError
from lightning_dynamical.oracles.label_studio import read_annotations
from tests.helpers.tiny import quiet_trainer, read_csv

NAMES = ["person", "organisation", "location"]
B = 4


def _run(tmp_path: Path, oracle: LabelStudioOracle):
    seed_everything(0, verbose=False)
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    dm = ActiveLearningDataModule(TensorDataset(x, (x[:, :3] > 0).float()), initial_size=10, task="multilabel")
    loop = ActiveLearningLoop(Random(), query_size=B, rounds=1, max_epochs_per_round=1, oracle=oracle,
                              dirpath=str(tmp_path / "run"), save_round_checkpoints=False, verbose=False)
    return quiet_trainer(tmp_path, [loop]), loop, Classifier(nn.Linear(5, 3)), dm


def test_label_sets_round_trip_through_a_multiple_choice_project(label_studio, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    oracle = LabelStudioOracle(label_studio.url, project="multi label", class_names=NAMES)
    trainer, loop, model, dm = _run(tmp_path, oracle)
    trainer.fit(model, datamodule=dm)
    assert loop.pending is not None
    assert 'choice="multiple"' in label_studio.project("multi label")["label_config"]
    tasks = label_studio.tasks("multi label")
    pending = dict(zip(loop.pending["indices"], loop.pending["pseudo_labels"].tolist()))
    human = {}
    for k, task in enumerate(tasks):
        index = task["data"]["pool_index"]
        (prediction,) = label_studio.request("GET", f"/api/tasks/{task['id']}")["predictions"]
        assert prediction["result"][0]["value"]["choices"] == [n for n, on in zip(NAMES, pending[index]) if on]
        human[index] = [[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]][k]
        chosen = [n for n, on in zip(NAMES, human[index]) if on]
        label_studio.request("POST", f"/api/tasks/{task['id']}/annotations", {"result": [
            {"from_name": "label", "to_name": "sample", "type": "choices", "value": {"choices": chosen}}]})
    trainer, loop, model, dm = _run(tmp_path, oracle)
    trainer.fit(model, datamodule=dm, ckpt_path=str(tmp_path / "run" / "al_pending_round_0.ckpt"))
    assert loop.finished and dm.num_labeled == 10 + B
    labeled = dm.labeled_dataset()
    for index, vector in human.items():
        assert labeled[dm.labeled_indices.index(index)][1].tolist() == vector
    rows = {int(r["index"]): dm.task.decode_label(r["label"]).tolist() for r in read_csv(tmp_path / "run" /
                                                                                         "al_queries.csv")}
    assert rows == human


def test_multiple_choice_annotations_are_refused_when_unknown_or_disagreeing() -> None:
    query = Query(0, [3, 5], None, None)

    def task(index: int, *choice_sets: list[str]) -> dict:
        return {"data": {"pool_index": index}, "annotations": [
            {"result": [{"from_name": "label", "value": {"choices": c}}]} for c in choice_sets]}

    assert read_annotations([task(3, ["location", "person"]), task(5, [])], query, NAMES, "p", multiple=True) == \
        [[1, 0, 1], [0, 0, 0]]
    with pytest.raises(LabelFileError, match="choices that are not classes .*'planet'"):
        read_annotations([task(3, ["planet"]), task(5, [])], query, NAMES, "p", multiple=True)
    with pytest.raises(LabelFileError, match="annotators disagree on pool indices"):
        read_annotations([task(3, ["person"], ["location"]), task(5, [])], query, NAMES, "p", multiple=True)
