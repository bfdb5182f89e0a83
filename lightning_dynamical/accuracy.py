"""Accuracy of the model on a data set in eval mode, each DDP rank on its shard, reduced by torchmetrics."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torchmetrics.classification import MulticlassAccuracy

from lightning_dynamical.batches import batch_inputs, batch_targets, forward_logits, to_model
from lightning_dynamical.distributed import shard
from lightning_dynamical.pool import ActiveLearningDataModule
from lightning_dynamical.scoring.common import evaluation


class Evaluator:
    """Measures accuracy on the data module's sets; remembers the model's logit width (``num_classes``)."""

    def __init__(self) -> None:
        self.num_classes = 0

    def accuracy(self, trainer: Trainer, model: LightningModule, dm: ActiveLearningDataModule, dataset: Any) -> float:
        """Micro accuracy on ``dataset`` (evaluation loader of ``dm``), the same on every rank."""
        if trainer.world_size > 1:
            dataset = torch.utils.data.Subset(dataset, shard(range(len(dataset)), trainer.global_rank,
                                                             trainer.world_size))
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
