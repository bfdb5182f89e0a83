"""Resume: a run interrupted after a round and resumed from its round checkpoint ends where an
uninterrupted run ends; the labeled set survives weights-only checkpoints and al_state.json."""

from __future__ import annotations

import json
import math
import re

import lightning as L
import pytest
import torch

from lightning_dynamical import ActiveLearningLoop, Classifier, DynamicAL
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.models import DigitsCNN
from lightning_dynamical.records import files as records
from lightning_dynamical.records import migrate
from lightning_dynamical.records.run import load_split
from tests.helpers.tiny import CrashAtRound, comparable_state, digits_datamodule, fit_loop, read_csv, toy_datamodule

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(tmp, crash_at: int | None = None, ckpt_path=None):
    L.seed_everything(0)
    dm = digits_datamodule()
    loop = ActiveLearningLoop(DynamicAL(), query_size=30, rounds=3, max_epochs_per_round=3, patience=2,
                              dirpath=str(tmp), verbose=False)
    crash = [] if crash_at is None else [CrashAtRound(loop, crash_at)]
    trainer = fit_loop(Classifier(DigitsCNN()), dm, loop, tmp, callbacks=crash, ckpt_path=ckpt_path)
    return dm, loop, trainer


def _queries(path):
    """al_queries.csv without the scores (floats from another process)."""
    return [{k: v for k, v in row.items() if k != "score"} for row in read_csv(path)]


def test_interrupted_run_resumes_to_the_same_state(tmp_path):
    full, crash = tmp_path / "full", tmp_path / "crash"
    dm_full, loop_full, _ = _run(full)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(crash, crash_at=2)
    state_at_crash = json.loads((crash / "al_state.json").read_text())
    assert state_at_crash["round"] == 2
    dm, loop, _ = _run(crash, ckpt_path=str(crash / "al_round_1.ckpt"))
    assert loop.round == 3 and loop.finished
    assert comparable_state(crash / "al_state.json") == comparable_state(full / "al_state.json")
    assert (crash / "al_rounds.csv").read_text().count("\n") == 5
    assert _queries(crash / "al_queries.csv") == _queries(full / "al_queries.csv")
    queried = _queries(full / "al_queries.csv")
    assert [int(r["round"]) for r in queried] == [0] * 30 + [1] * 30 + [2] * 30
    assert [int(r["index"]) for r in queried] == dm_full.labeled_indices[40:]  # every labeled sample after the first
    pool = dm_full.splits.pool
    assert all(int(r["label"]) == int(pool[int(r["index"])][1]) and r["labeled_by"] == "dataset" for r in queried)
    assert dm.labeled_indices == dm_full.labeled_indices


def test_checkpoint_holds_split_and_loads_weights_only(tmp_path):
    dm, loop, trainer = _run(tmp_path)
    ckpt = torch.load(tmp_path / "al_round_0.ckpt", weights_only=True)
    dm_state = ckpt["ActiveLearningDataModule"]
    assert len(dm_state["labeled"]) == 70
    assert any("ActiveLearningLoop" in k for k in ckpt["callbacks"])
    trainer.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    weights_only = torch.load(tmp_path / "w.ckpt", weights_only=True)
    assert weights_only["ActiveLearningDataModule"]["labeled"] == dm.labeled_indices


def test_resume_from_state_rebuilds_split(tmp_path):
    dm, *_ = _run(tmp_path / "a")
    fresh = digits_datamodule(seed=5)
    assert fresh.labeled_indices != dm.labeled_indices[:40]
    loop = ActiveLearningLoop(query_size=30, rounds=3, max_epochs_per_round=1, dirpath=str(tmp_path / "b"),
                              resume_from_state=str(tmp_path / "a" / "al_state.json"), verbose=False)
    fit_loop(Classifier(DigitsCNN()), fresh, loop, tmp_path)
    assert fresh.labeled_indices == dm.labeled_indices
    assert loop.round == 3 and loop.finished and len(loop.history) == 4


@pytest.mark.parametrize("bad, match", [
    ({"labeled": [0, 5, 0, 5, 7]}, r"'labeled' repeats the indices \[0, 5\]"),
    ({"labeled": [10**6]}, r"'labeled' has indices outside 0\.\.1496 \(dataset_size=1497\): \[1000000\]"),
    ({"dataset_size": 3, "labeled": [0, 1]}, r"does not fit this pool: state is for a pool of 3 samples; this pool"),
    ({"round": "two"}, r"'round' must be an int >= 0, got 'two'"),
    ({"labeled": "0,1"}, r"'labeled' must be a list of int indices, got '0,1'"),
    ("not json", r"is not valid JSON"),
])
def test_invalid_state_file_refused(tmp_path, bad, match):
    fresh = digits_datamodule()
    before = fresh.state_dict()
    records.write_state(str(tmp_path), {"round": 1, "dataset_size": before["dataset_size"],
                                        "labeled": before["labeled"], "given_labels": [], "history": []})
    path = tmp_path / "al_state.json"
    if bad == "not json":
        path.write_text("{broken")
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), **bad}))
    with pytest.raises(ConfigError, match=f"^state file {re.escape(str(path))}.*{match}"):
        load_split(fresh, str(path))
    assert fresh.state_dict() == before


def test_stale_temporary_files_are_removed(tmp_path):
    (tmp_path / f"al_rounds.csv.tmp-{'a' * 32}").write_text("half")
    (tmp_path / ".al_staging").mkdir()
    (tmp_path / ".al_staging" / "tmpabc123").write_bytes(b"partial checkpoint")
    keep = [tmp_path / "al_rounds.csv", tmp_path / "notes.tmp-1", tmp_path / f"x.tmp-{'b' * 32}"]
    for path in keep:
        path.write_text("keep")
    assert len(records.remove_stale_temps(str(tmp_path))) == 2
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_tiny_dataset_round_trip():
    dm = toy_datamodule(20, test_size=0, initial_size=4)
    assert dm.num_labeled == 4


def test_loop_state_of_the_previous_version_still_loads():
    """Checkpoints written before strategies had a default state_dict hold ``strategy: None``; they still load, and
    the loop's state keeps the same keys."""
    old = {"round": 2, "finished": False, "history": [{"round": 0}, {"round": 1}],
           "convergence": {"epochs": 3, "best": 0.5, "wait": 1, "recent": [0.6, 0.5], "last_loss": 0.5, "reason": ""},
           "rng": {"torch": torch.get_rng_state(), "python": [0] * 625}, "strategy": None, "stopping": {},
           "pending": {"row": {"round": 2}, "metrics": {}, "indices": [4, 7], "scores": None,
                       "pseudo_labels": torch.tensor([1, 0])}}
    loop = ActiveLearningLoop(DynamicAL(), query_size=30, rounds=3)
    loop.load_state_dict(old)
    def completed_row(r: dict) -> dict:  # rows get the fields they lack, NaN or "", and the accuracy as their metric
        row = {**r, **migrate.ROW_DEFAULTS}
        return {**row, "metric": "acc", "test_metric": r.get("test_acc", math.nan), "train_metric": row["train_acc"]}

    completed = [completed_row(r) for r in old["history"]]
    assert (loop.round, loop.history, loop.convergence.epochs) == (2, completed, 3)
    query, row, _ = loop.labeling.pending.query(loop.round)
    assert query.indices == [4, 7] and query.pseudo_labels.tolist() == [1, 0]
    assert row == completed_row({"round": 2})
    assert set(loop.state_dict()) == {*old, "rescore", "epoch_loss", "dirpath"} and loop.state_dict()["strategy"] == {}


class SaveMidRound(L.Callback):
    """Saves ``mid.ckpt`` at the end of the ``epoch``-th epoch of ``round`` (after the loop's own epoch-end)."""

    def __init__(self, loop: ActiveLearningLoop, path, round: int, epoch: int) -> None:
        self.loop, self.path, self.round, self.epoch, self.state = loop, path, round, epoch, None

    def on_train_epoch_end(self, trainer, pl_module):
        if self.state is None and self.loop.round == self.round and self.loop.convergence.epochs == self.epoch:
            self.state = json.loads(json.dumps(self.loop.convergence.state_dict()))
            trainer.save_checkpoint(self.path)


class ConvergenceAtStart(L.Callback):
    def __init__(self, loop: ActiveLearningLoop) -> None:
        self.loop, self.state = loop, None

    def on_train_epoch_start(self, trainer, pl_module):
        if self.state is None:
            self.state = json.loads(json.dumps(self.loop.convergence.state_dict()))


def test_resume_mid_round_keeps_the_convergence_rule_state(tmp_path):
    """A checkpoint saved within a round under the default rule (fit streak, loss window, best, wait) resumes with
    that state, and the round ends at the epoch, and for the reason, of the uninterrupted run."""
    def run(out, callbacks, ckpt_path=None):
        L.seed_everything(0)
        loop = ActiveLearningLoop(DynamicAL(), query_size=30, rounds=2, dirpath=str(out), verbose=False)
        extra = [cb(loop) for cb in callbacks]
        fit_loop(Classifier(DigitsCNN()), digits_datamodule(), loop, out, callbacks=extra, ckpt_path=ckpt_path)
        return loop, extra

    full, saver = run(tmp_path / "full", [lambda loop: SaveMidRound(loop, tmp_path / "mid.ckpt", round=1, epoch=6)])
    assert saver[0].state is not None and saver[0].state["fit_streak"] > 0 and len(saver[0].state["recent"]) == 5
    resumed, start = run(tmp_path / "resumed", [ConvergenceAtStart], ckpt_path=str(tmp_path / "mid.ckpt"))
    assert start[0].state == saver[0].state
    keys = ("round", "labeled", "epochs", "converged_by")
    assert [{k: r[k] for k in keys} for r in resumed.history] == [{k: r[k] for k in keys} for r in full.history]
