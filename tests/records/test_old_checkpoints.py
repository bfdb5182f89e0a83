"""Files written before the loop was split into parts (commit a374e385; ``tests/records/v0_checkpoints``, made by its
``make.py``) still resume with today's code: at the round they were saved in, with the labeled set they recorded,
through to the last round; migrated (:mod:`lightning_dynamical.records.migrate`) to what today's code writes."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lightning_dynamical import (
    ActiveLearningDataModule,
    ActiveLearningLoop,
    Classifier,
    DynamicAL,
    FileOracle,
    Query,
    Random,
)
from lightning_dynamical.loop.convergence import Convergence
from lightning_dynamical.loop.pending import PendingQuery
from lightning_dynamical.oracles.files import main as label_main
from lightning_dynamical.records import files as records
from lightning_dynamical.records.migrate import migrate_loop_state, migrate_records_state

DATA = Path(__file__).parent / "v0_checkpoints"
_spec = importlib.util.spec_from_file_location("v0_make", DATA / "make.py")
assert _spec is not None and _spec.loader is not None
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)

LOOP = "ActiveLearningLoop"
DM = "ActiveLearningDataModule"
RUN_ROUNDS, PAUSED_ROUNDS = 3, 2


class AtStart(L.Callback):
    """Notes where the resumed run starts: the loop's round, the labeled set and the convergence state."""

    def __init__(self, loop: ActiveLearningLoop) -> None:
        self.loop = loop

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.round, self.labeled = self.loop.round, list(trainer.datamodule.labeled_indices)
        self.convergence = self.loop.convergence.state_dict()


def _fit(dirpath: Path, strategy: Any, rounds: int, ckpt_path: Path | None = None, **loop_kwargs: Any
         ) -> tuple[ActiveLearningLoop, ActiveLearningDataModule, AtStart]:
    """The run ``make.py`` made, with today's code: same data, network and loop settings."""
    L.seed_everything(0)
    pool, test = make.tiny_data()
    dm = ActiveLearningDataModule(pool, None, test, initial_size=make.INITIAL_SIZE, batch_size=10, seed=0)
    loop = ActiveLearningLoop(strategy, query_size=make.QUERY_SIZE, rounds=rounds, patience=2, max_epochs_per_round=3,
                              dirpath=str(dirpath), verbose=False, **loop_kwargs)
    start = AtStart(loop)
    trainer = L.Trainer(max_epochs=-1, callbacks=[start, loop], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=dirpath)
    trainer.fit(Classifier(make.TinyNet(), num_classes=3, optimizer="sgd", lr=0.1), datamodule=dm,
                ckpt_path=str(ckpt_path) if ckpt_path else None)
    return loop, dm, start


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """A copy of the old files (a resumed run writes query files next to them)."""
    shutil.copytree(DATA, tmp_path / "old", ignore=shutil.ignore_patterns("*.py"))
    return tmp_path / "old"


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _measured(rows: list[dict[str, Any]]) -> list[tuple[int, int, float, int]]:
    """What a round row records about the model and split (not wall-clock seconds)."""
    return [(int(r["round"]), int(r["labeled"]), float(r["test_acc"]), int(r["epochs"])) for r in rows]


def _same(a: Any, b: Any) -> bool:
    """Equal (tensors too), NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


@pytest.mark.parametrize("name, starts_at", [("al_round_0.ckpt", 1), ("al_round_1.ckpt", 2), ("al_round_2.ckpt", 3),
                                             ("mid_round_1.ckpt", 1)])
def test_old_checkpoint_continues_the_old_run(one_thread, old, tmp_path, name, starts_at):
    """Resumed with today's code, an old checkpoint starts at its round with the labeled set the old run recorded
    then, and ends where the old run ended: the same labeled set, the same test accuracy in every round."""
    recorded = _json(old / "run" / f"al_state_round_{starts_at}.json")
    loop, dm, start = _fit(tmp_path / "new", DynamicAL(), RUN_ROUNDS, old / "run" / name)
    assert (start.round, start.labeled) == (starts_at, recorded["labeled"])
    assert start.labeled == _checkpoint(old / "run" / name)[DM]["labeled"]
    old_end = _json(old / "run" / "al_state.json")
    assert loop.finished and loop.round == RUN_ROUNDS
    assert dm.labeled_indices == old_end["labeled"]
    assert _measured(loop.history) == _measured(old_end["history"])
    with open(tmp_path / "new" / records.ROUNDS_FILE) as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == records.ROUND_FIELDS
        rows = list(reader)
    assert _measured(rows) == _measured(old_end["history"])
    assert all(r["train_loss"] == "nan" for r in rows[:starts_at]), "old rounds did not measure the train loss"


def test_old_mid_round_checkpoint_restarts_the_plateau_test(one_thread, old, tmp_path):
    """Within a round, the old (raw-loss) best is not compared with today's smoothed loss: the plateau test
    starts over while the round's epoch count is kept."""
    saved = _checkpoint(old / "run" / "mid_round_1.ckpt")["callbacks"][LOOP]["convergence"]
    assert saved["epochs"] == 1 and math.isfinite(saved["best"]) and "recent" not in saved
    _, _, start = _fit(tmp_path / "new", DynamicAL(), RUN_ROUNDS, old / "run" / "mid_round_1.ckpt")
    assert _same(start.convergence, {"epochs": 1, "best": math.inf, "wait": 0, "recent": [], "last_loss": math.nan,
                                     "reason": "", "fit_streak": 0, "ended_by": "", "last_accuracy": math.nan})


@pytest.mark.parametrize("starts_at", [1, 2, 3])
def test_old_state_file_resumes_its_split(one_thread, old, tmp_path, starts_at):
    """``resume_from_state`` with an old ``al_state.json`` (which names no weights): its round and labeled set,
    its finished rounds kept, through to the last round."""
    path = old / "run" / f"al_state_round_{starts_at}.json"
    recorded = _json(path)
    with pytest.warns(UserWarning, match="names no checkpoint"):
        loop, dm, start = _fit(tmp_path / "new", DynamicAL(), RUN_ROUNDS, resume_from_state=str(path))
    assert (start.round, start.labeled) == (starts_at, recorded["labeled"])
    assert loop.finished and [r["round"] for r in loop.history] == list(range(RUN_ROUNDS + 1))
    assert dm.labeled_indices[:len(recorded["labeled"])] == recorded["labeled"]
    assert dm.num_labeled == make.INITIAL_SIZE + RUN_ROUNDS * make.QUERY_SIZE
    written = _json(tmp_path / "new" / records.STATE_FILE)
    assert _measured(written["history"][:starts_at]) == _measured(recorded["history"])
    assert all(set(r) == set(written["history"][-1]) for r in written["history"])


def test_old_paused_checkpoint_collects_its_labels(one_thread, old, tmp_path):
    """An old checkpoint saved with labels pending: resuming collects the filled-in CSV and finishes."""
    paused = _checkpoint(old / "paused" / "al_pending_round_1.ckpt")["callbacks"][LOOP]["pending"]
    oracle = FileOracle(str(old / "paused" / "queries"), num_classes=3)
    loop, dm, start = _fit(tmp_path / "new", Random(), PAUSED_ROUNDS, old / "paused" / "al_pending_round_1.ckpt",
                           oracle=oracle)
    assert (start.round, start.labeled) == (1, _json(old / "paused" / records.STATE_FILE)["labeled"])
    assert loop.finished and loop.pending is None and [r["round"] for r in loop.history] == [0, 1, 2]
    assert dm.labeled_indices == [*start.labeled, *paused["indices"]]
    assert _measured([loop.history[1]]) == _measured([paused["row"]])
    pool, _ = make.tiny_data()
    given = dict(dm.state_dict()["given_labels"])
    assert [given[i] for i in paused["indices"]] == [int(pool[i][1]) for i in paused["indices"]]


def test_old_paused_state_resumes_after_label_import(one_thread, old, tmp_path):
    """The other way out of an old pause: ``label import`` into its ``al_state.json``, then ``resume_from_state``."""
    state = old / "paused" / records.STATE_FILE
    before = _json(state)
    assert label_main(["import", str(old / "paused" / "queries" / "queries_round_1.csv"), "--state", str(state)]) == 0
    imported = _json(state)
    assert imported["round"] == 2 and set(imported) >= set(before) | {"stopping", "weights"}
    with pytest.warns(UserWarning, match="names no checkpoint"):
        loop, dm, start = _fit(tmp_path / "new", Random(), PAUSED_ROUNDS, resume_from_state=str(state))
    assert (start.round, start.labeled) == (2, imported["labeled"])
    assert loop.finished and dm.labeled_indices == imported["labeled"]


def test_old_round_checkpoint_of_a_paused_run_uses_the_answered_queries(one_thread, old, tmp_path):
    """A file-labeled run's old round checkpoint: the next query is the one the old run asked (same seed, same
    selection), so its filled-in CSV answers it."""
    oracle = FileOracle(str(old / "paused" / "queries"), num_classes=3)
    loop, dm, start = _fit(tmp_path / "new", Random(), PAUSED_ROUNDS, old / "paused" / "al_round_0.ckpt",
                           oracle=oracle)
    pending = _checkpoint(old / "paused" / "al_pending_round_1.ckpt")["callbacks"][LOOP]["pending"]
    assert start.round == 1 and loop.finished
    assert dm.labeled_indices == [*start.labeled, *pending["indices"]]


def _keys(value: Any) -> Any:
    """The nested key structure of a state (dicts by key, lists by their first item)."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_keys(value[0])]
    return None


@pytest.fixture(scope="module")
def today(tmp_path_factory) -> dict[str, Any]:
    """What today's code writes for the same run: a round checkpoint and ``al_state.json``, and a paused query."""
    folder, threads = tmp_path_factory.mktemp("today"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(folder, Random(), 1)
    finally:
        torch.set_num_threads(threads)
    pending = PendingQuery()
    pending.keep({"round": 0}, Query(0, [1], torch.ones(1), torch.zeros(1, dtype=torch.long)), {})
    return {"checkpoint": _checkpoint(folder / "al_round_0.ckpt"), "state": _json(folder / records.STATE_FILE),
            "pending": pending.state}


@pytest.mark.parametrize("path", ["run/al_round_0.ckpt", "run/mid_round_1.ckpt", "paused/al_pending_round_1.ckpt"])
def test_migrated_checkpoint_state_is_todays_format(today, path):
    """Old checkpoints lack keys today's loop writes; migrated, they have exactly today's (the data module's state
    needs no migration: it has today's keys as saved)."""
    saved, new = _checkpoint(DATA / path), today["checkpoint"]
    old_state, new_state = saved["callbacks"][LOOP], new["callbacks"][LOOP]
    assert _keys(old_state) != _keys(new_state)
    migrated = migrate_loop_state(old_state)
    assert {**_keys(migrated), "pending": None} == _keys(new_state)
    if migrated["pending"] is not None:
        assert migrated["pending"].keys() == today["pending"].keys()
        assert _keys(migrated["pending"]["row"]) == _keys(new_state["history"][0])
    assert saved[DM].keys() == new[DM].keys()


def test_migrated_round_start_convergence_is_what_today_saves():
    """A round checkpoint's convergence state (saved as a round starts) migrates to exactly today's."""
    old = _checkpoint(DATA / "run" / "al_round_1.ckpt")["callbacks"][LOOP]
    assert _same(migrate_loop_state(old)["convergence"], Convergence().state_dict())


@pytest.mark.parametrize("path", ["run/al_state_round_0.json", "run/al_state.json", "paused/al_state.json"])
def test_migrated_state_file_is_todays_format(today, path):
    """Old ``al_state.json`` files lack keys today's writes; read (and migrated), they have exactly today's."""
    saved = _json(DATA / path)
    assert _keys(saved) != _keys(today["state"])
    migrated = migrate_records_state(saved)
    if not migrated["history"]:
        migrated["history"] = today["state"]["history"][:1]
    assert _keys(migrated) == _keys(today["state"])
    assert records.read_state(str(DATA / path)).keys() == today["state"].keys()


def test_todays_states_pass_unchanged(today):
    """Migration leaves today's formats as they are, so load paths can call it on whatever they read."""
    state = today["checkpoint"]["callbacks"][LOOP]
    assert _same(migrate_loop_state(state), state)
    assert _same(migrate_records_state(today["state"]), today["state"])
