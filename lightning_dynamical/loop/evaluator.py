"""What the loop measures on the model: accuracy on a data set and the logit width."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Subset
from torchmetrics.classification import MulticlassAccuracy

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop.convergence import Convergence, near_chance_warning
from lightning_dynamical.loop.distributed import shard
from lightning_dynamical.scoring.diagnostics import NO_REGIME
from lightning_dynamical.tasks.batches import batch_inputs, batch_targets, evaluation, forward_logits, to_model


class Evaluator:
    """Measures the model in eval mode on the data module's sets; remembers its logit width (``num_classes``)."""

    def __init__(self) -> None:
        self.num_classes = 0

    def check_classes(self, model: LightningModule, dm: ActiveLearningDataModule) -> None:
        """Run two samples through the model and check its logit width against the data's classes."""
        probe = dm.pool_dataset(range(2)) if dm.num_unlabeled >= 2 else dm.labeled_dataset(evaluation=True)
        with evaluation(model), torch.no_grad():
            x = to_model(batch_inputs(next(iter(dm.eval_loader(probe))), dm.label_key), model)
            width = int(forward_logits(model, x).shape[1])
        if width < 2:
            raise ConfigError(f"the model outputs {width} value per sample, but the loop runs single-label "
                              "classification: one logit per class (at least 2). A regression output has no class to "
                              "take as pseudo label (its pseudo-target gradient is zero by construction), and a "
                              "binary task needs 2 logits")
        dm.use_model_classes(width)

    def accuracy(self, trainer: Trainer, model: LightningModule, dm: ActiveLearningDataModule, dataset: Any) -> float:
        """Micro accuracy on ``dataset`` (evaluation loader of ``dm``): each rank its shard, reduced by
        torchmetrics, so the same on every rank."""
        if trainer.world_size > 1:
            dataset = Subset(dataset, shard(range(len(dataset)), trainer.global_rank, trainer.world_size))
        metric: MulticlassAccuracy | None = None
        with evaluation(model), torch.no_grad():
            for batch in dm.eval_loader(dataset):
                logits = forward_logits(model, to_model(batch_inputs(batch, dm.label_key), model))
                if metric is None:
                    self.num_classes = int(logits.shape[1])
                    metric = MulticlassAccuracy(self.num_classes, average="micro").to(logits.device)
                metric.update(logits, batch_targets(batch, dm.label_key).to(logits.device))
        if metric is None:
            metric = MulticlassAccuracy(2, average="micro").to(model.device)
        return float(metric.compute())

    def round_row(self, trainer: Trainer, model: LightningModule, dm: ActiveLearningDataModule, round: int,
                  convergence: Convergence) -> dict[str, Any]:
        """The ``al_rounds.csv`` row of the round that just trained (``score_seconds`` filled in later); warns
        when the labeled-set accuracy is near chance."""
        test = self.accuracy(trainer, model, dm, dm.splits.test) if dm.splits.test is not None else math.nan
        row: dict[str, Any] = {"round": round, "labeled": dm.num_labeled, "pool": dm.num_unlabeled, "test_acc": test,
               "score_seconds": 0.0, "epochs": convergence.epochs, "train_loss": convergence.last_loss,
               "train_acc": self.accuracy(trainer, model, dm, dm.labeled_dataset(evaluation=True)),
               "converged_by": convergence.ended_by, "smoothed_loss": convergence.figure(), **NO_REGIME.row()}
        if convergence.capped:
            rank_zero_warn(convergence.capped_warning(round))
        warning = near_chance_warning(round, float(row["train_acc"]), self.num_classes, convergence.reason)
        if warning:
            rank_zero_warn(warning)
        return row
