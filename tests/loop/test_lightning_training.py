"""The loop under the Trainer options people already use: gradient accumulation records the true train loss, and a
spawn-based strategy (``ddp_spawn``) is refused before anything is written."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from lightning_dynamical import ActiveLearningLoop, Classifier, Random
from lightning_dynamical.tasks.batches import batch_inputs, batch_targets
from tests.helpers.tiny import fit_loop, read_csv, toy_classifier, toy_datamodule

pytestmark = pytest.mark.usefixtures("one_thread")


class _Frozen(Classifier):
    """Trains with ``lr=0``: the weights, and so each epoch's true mean loss, stay those the epoch starts with."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class _TrueLoss(L.Callback):
    """The per-sample mean cross-entropy over the labeled set at each epoch's start, computed independently."""

    def __init__(self, loop: ActiveLearningLoop) -> None:
        self.loop, self.losses = loop, []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = self.loop.datamodule
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in dm.eval_loader(dm.labeled_dataset()):
                logits = pl_module(batch_inputs(batch))
                total += float(nn.functional.cross_entropy(logits, batch_targets(batch), reduction="sum"))
                count += len(logits)
        self.losses.append(total / count)


@pytest.mark.parametrize("accumulate", [1, 3, 4])
def test_accumulated_gradients_record_the_true_train_loss(tmp_path, accumulate):
    """Lightning hands ``on_train_batch_end`` the loss divided by ``accumulate_grad_batches``; the recorded
    ``train_loss`` (and so the convergence rule) is nevertheless the per-sample mean loss of the epoch. Batches of
    3, 3, 3, 1 (then 3 x 5) also check the weighting by batch size and a last, incomplete accumulation window."""
    L.seed_everything(0)
    loop = ActiveLearningLoop(Random(), query_size=5, rounds=1, max_epochs_per_round=1, train_acc_threshold=None,
                              loss_target=None, dirpath=str(tmp_path), verbose=False, save_round_checkpoints=False)
    truth = _TrueLoss(loop)
    with pytest.warns(UserWarning, match="max_epochs_per_round=1"):
        fit_loop(_Frozen(nn.Linear(4, 2), num_classes=2), toy_datamodule(batch_size=3), loop, tmp_path, [truth],
                 accumulate_grad_batches=accumulate)
    recorded = [float(row["train_loss"]) for row in read_csv(tmp_path / "al_rounds.csv")]
    assert len(recorded) == len(truth.losses) == 2 and truth.losses[0] != truth.losses[1]
    assert recorded == pytest.approx(truth.losses, rel=1e-6)


def test_ddp_spawn_is_refused_before_anything_is_written(tmp_path):
    """``ddp_spawn`` runs the fit only in child processes: the caller's data module and loop would stay stale. The
    loop refuses it at setup (in the children, so the parent sees it inside torch's ``ProcessRaisedException``),
    pointing to ``strategy='ddp'``; nothing is written and the caller's objects are as they were."""
    dm = toy_datamodule(batch_size=8)
    loop = ActiveLearningLoop(Random(), query_size=5, rounds=1, max_epochs_per_round=1, dirpath=str(tmp_path / "run"),
                              verbose=False)
    before = dm.num_labeled
    with pytest.raises(Exception, match=r"ConfigError: .*'spawn'.*use strategy='ddp'"):
        fit_loop(toy_classifier(), dm, loop, tmp_path / "root", strategy="ddp_spawn", devices=2)
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob("root/**/*.*"))
    assert dm.num_labeled == before and loop.history == [] and loop.round == 0
