"""The loop next to the Lightning callbacks people already use: EarlyStopping, a Timer or max_epochs that end the
fit are named with the round (records whole up to the last finished round), a monitoring ModelCheckpoint is warned
about, and the final model is ``al_final.ckpt``."""

from __future__ import annotations

import json
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer

from lightning_dynamical import ActiveLearningLoop, Classifier, Random
from lightning_dynamical.models import DigitsCNN
from tests.helpers.tiny import digits_datamodule, fit_loop, read_csv

pytestmark = pytest.mark.usefixtures("one_thread")


def _loop(tmp_path, **kwargs) -> ActiveLearningLoop:
    return ActiveLearningLoop(Random(), query_size=20, rounds=2, dirpath=str(tmp_path), verbose=False, **kwargs)


def test_early_stopping_ends_the_run_with_a_line_and_consistent_records(tmp_path, caplog):
    """EarlyStopping(monitor="val_loss") fires in round 1: the fit ends there, a line names it with the round, and
    the records hold round 0 whole (its row, its queries, its checkpoint) with the labeled set after its query."""
    L.seed_everything(0)
    loop = _loop(tmp_path, max_epochs_per_round=2)
    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=1.0)  # fires at the third validation
    with caplog.at_level("INFO", logger="lightning_dynamical"), pytest.warns(UserWarning, match="before training"):
        fit_loop(Classifier(DigitsCNN()), digits_datamodule(val_size=100), loop, tmp_path, callbacks=[stopper],
                 num_sanity_val_steps=0)
    assert "EarlyStopping(monitor='val_loss') ended the fit in round 1 (epoch 1 of the round) before active " \
           "learning finished: 1 round(s) recorded, 60 labeled samples" in caplog.text
    assert not loop.finished and loop.final_checkpoint is None
    assert [r["round"] for r in read_csv(tmp_path / "al_rounds.csv")] == ["0"]
    assert {r["round"] for r in read_csv(tmp_path / "al_queries.csv")} == {"0"}
    state = json.loads((tmp_path / "al_state.json").read_text())
    assert state["round"] == 1 and len(state["labeled"]) == 60 and (tmp_path / "al_round_0.ckpt").exists()


def test_a_timer_that_ends_the_fit_is_named_with_the_round(tmp_path, caplog):
    L.seed_everything(0)
    loop = _loop(tmp_path)
    with caplog.at_level("INFO", logger="lightning_dynamical"):
        fit_loop(Classifier(DigitsCNN()), digits_datamodule(), loop, tmp_path,
                 callbacks=[Timer(duration={"seconds": 0}, interval="epoch")])
    assert not loop.finished and loop.history == []
    assert "Timer (max_time) ended the fit at the start of round 0 before active learning finished: 0 round(s) " \
           "recorded, 40 labeled samples" in caplog.text


def test_trainer_max_epochs_that_ends_the_fit_is_named(tmp_path, caplog):
    L.seed_everything(0)
    loop = _loop(tmp_path)
    with caplog.at_level("INFO", logger="lightning_dynamical"), pytest.warns(UserWarning, match="may stop before"):
        fit_loop(Classifier(DigitsCNN()), digits_datamodule(), loop, tmp_path, max_epochs=3)
    assert "Trainer(max_epochs=3) ended the fit in round 0 (epoch 3 of the round)" in caplog.text


def test_final_model_is_al_final_ckpt_and_a_monitoring_checkpoint_is_warned_about(tmp_path):
    L.seed_everything(0)
    loop = _loop(tmp_path, max_epochs_per_round=6)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_last=True)
    model = Classifier(DigitsCNN())
    dm = digits_datamodule(val_size=100)
    with pytest.warns(UserWarning, match=r"ModelCheckpoint\(monitor='val_loss'\) ranks checkpoints across"):
        trainer = fit_loop(model, dm, loop, tmp_path, callbacks=[checkpoint], enable_checkpointing=True,
                           num_sanity_val_steps=0)
    assert loop.final_checkpoint == str(tmp_path / "al_final.ckpt")
    saved = torch.load(loop.final_checkpoint, weights_only=False)
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in model.state_dict().items())
    assert saved["callbacks"]["ActiveLearningLoop"]["finished"] if "ActiveLearningLoop" in saved["callbacks"] else \
        any(s.get("finished") for s in saved["callbacks"].values() if isinstance(s, dict))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_final = trainer.test(model, datamodule=dm, ckpt_path=loop.final_checkpoint, verbose=False)[0]
        in_memory = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert from_final["test_acc"] == pytest.approx(loop.history[-1]["test_acc"], abs=1e-6)
    assert in_memory["test_acc"] == from_final["test_acc"]
