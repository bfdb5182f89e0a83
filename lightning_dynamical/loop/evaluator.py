"""What the loop measures on the model: the task's accuracy and headline metric on a data set, and the logit width."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Subset
from torchmetrics import Metric

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.data.splits import dataset_size
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop.convergence import Convergence, near_chance_warning
from lightning_dynamical.loop.distributed import shard
from lightning_dynamical.scoring.diagnostics import NO_REGIME
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import batch_inputs, batch_targets, evaluation, forward_logits, to_model


class Evaluator:
    """Measures the model in eval mode on the data module's sets with the data module's task; remembers the logit
    width (``num_classes``)."""

    def __init__(self) -> None:
        self.num_classes = 0

    def check_model(self, model: LightningModule, dm: ActiveLearningDataModule) -> None:
        """Run two labeled samples through the model: its output must be the task's logits, fit the targets, and have
        at least the task's fewest classes; then check its width against the data's classes, and that the task's
        headline metric can be built for it (token tags, one per class). One-line :class:`ConfigError` otherwise
        (before any epoch)."""
        task, probe = dm.task, dm.labeled_dataset(evaluation=True)
        batch = next(iter(dm.eval_loader(Subset(probe, range(min(2, dataset_size(probe)))))))
        with evaluation(model), torch.no_grad():
            try:
                logits = forward_logits(model, to_model(batch_inputs(batch, dm.label_key), model), task)
                task.prepare_targets(batch_targets(batch, dm.label_key), logits)
            except ValueError as err:
                raise ConfigError(f"{err} (the data module's task is {task.name!r})") from err
        width = task.classes_of(logits)
        if width < task.min_classes:
            raise ConfigError(f"the model outputs {width} value per sample, but the {task.name} task needs one logit "
                              f"per class (at least {task.min_classes}). A regression output has no class to take as "
                              "pseudo label (its pseudo-target gradient is zero by construction), and a binary task "
                              "needs 2 logits")
        dm.use_model_classes(width)
        self.num_classes = width
        task.metric(width)  # refused now, not at round 0's test (token tags that do not number the classes)

    def measure(self, trainer: Trainer, model: LightningModule, dm: ActiveLearningDataModule,
                dataset: Any) -> tuple[float, float]:
        """``(accuracy, headline metric)`` of the data module's task on ``dataset`` (evaluation loader of ``dm``;
        the two are equal when the task's headline is its accuracy): each rank its shard, reduced by torchmetrics,
        so the same on every rank."""
        task = dm.task
        if trainer.world_size > 1:
            dataset = Subset(dataset, shard(range(len(dataset)), trainer.global_rank, trainer.world_size))
        # built before the loop when the width is known, so a rank with an empty shard still joins the reduction
        metrics = self._metrics(task, self.num_classes, model.device) if self.num_classes else []
        with evaluation(model), torch.no_grad():
            for batch in dm.eval_loader(dataset):
                logits = forward_logits(model, to_model(batch_inputs(batch, dm.label_key), model), task)
                if not metrics:
                    self.num_classes = task.classes_of(logits)
                    metrics = self._metrics(task, self.num_classes, logits.device)
                targets = task.metric_targets(task.prepare_targets(batch_targets(batch, dm.label_key), logits))
                for m in metrics:
                    m.update(task.metric_inputs(logits), targets)
        if not metrics:
            return math.nan, math.nan
        values = [float(m.compute()) for m in metrics]
        return values[0], values[-1]

    @staticmethod
    def _metrics(task: Task, classes: int, device: torch.device) -> list[Metric]:
        """The task's accuracy and (when it has one) headline metric for ``classes`` classes, on ``device``."""
        return [m.to(device) for m in (task.accuracy(classes), task.metric(classes)) if m is not None]

    def accuracy(self, trainer: Trainer, model: LightningModule, dm: ActiveLearningDataModule, dataset: Any) -> float:
        """The task's accuracy on ``dataset`` (see :meth:`measure`)."""
        return self.measure(trainer, model, dm, dataset)[0]

    def round_row(self, trainer: Trainer, model: LightningModule, dm: ActiveLearningDataModule, round: int,
                  convergence: Convergence) -> dict[str, Any]:
        """The ``al_rounds.csv`` row of the round that just trained (``score_seconds`` filled in later); warns
        when the labeled-set accuracy is near chance."""
        test = self.measure(trainer, model, dm, dm.splits.test) if dm.splits.test is not None else (math.nan,) * 2
        train = self.measure(trainer, model, dm, dm.labeled_dataset(evaluation=True))
        row: dict[str, Any] = {"round": round, "labeled": dm.num_labeled, "pool": dm.num_unlabeled,
                               "test_acc": test[0], "score_seconds": 0.0, "epochs": convergence.epochs,
                               "train_loss": convergence.last_loss, "train_acc": train[0],
                               "converged_by": convergence.ended_by, "smoothed_loss": convergence.figure(),
                               **NO_REGIME.row(), "metric": dm.task.metric_name, "test_metric": test[1],
                               "train_metric": train[1]}
        if convergence.capped:
            rank_zero_warn(convergence.capped_warning(round))
        warning = near_chance_warning(round, float(row["train_acc"]), self.num_classes, convergence.reason)
        if warning:
            rank_zero_warn(warning)
        return row
