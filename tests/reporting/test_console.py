"""The console: round lines are never glued to a progress bar; no empty validation loop (nor its warning)."""

from __future__ import annotations

import logging
import sys
import warnings

import lightning as L
import pytest
from tqdm import tqdm

from lightning_dynamical import ActiveLearningLoop, Random
from lightning_dynamical.reporting import console
from tests.helpers.tiny import fit_loop, toy_classifier, toy_datamodule


def test_round_line_is_written_on_its_own_line_around_a_live_bar(capsys):
    handler = console._TqdmHandler()
    with tqdm(total=10, file=sys.stdout, desc="Epoch 3", ascii=True) as bar:
        bar.update(4)
        handler.emit(logging.LogRecord("lightning_dynamical", logging.INFO, __file__, 1, "[active learning] round 0",
                                       None, None))
    out = capsys.readouterr().out
    before = out[: out.index("[active learning] round 0")]
    visible = before.rsplit("\n", 1)[-1].rsplit("\r", 1)[-1]  # what is left on the line when the message starts
    assert "Epoch 3" in before and visible.strip() == ""
    assert "[active learning] round 0\n" in out


def _fit(tmp_path, val_size: int) -> L.Trainer:
    loop = ActiveLearningLoop(Random(), query_size=5, rounds=1, max_epochs_per_round=1, dirpath=str(tmp_path))
    return fit_loop(toy_classifier(), toy_datamodule(val_size=val_size, batch_size=16), loop, tmp_path)


@pytest.mark.parametrize("val_size", [0, 10])
def test_validation_runs_only_with_a_validation_set_and_without_warnings(tmp_path, val_size):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _fit(tmp_path, val_size)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "Total length" in m or "val_dataloader" in m], messages
    assert trainer.enable_validation == bool(val_size)
    assert ("val_acc" in trainer.callback_metrics) == bool(val_size)
