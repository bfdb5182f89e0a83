"""``Classifier``: a plain LightningModule around any network that returns logits."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_dynamical.errors import check_positive_number
from lightning_dynamical.tasks.batches import LABEL_KEY, batch_inputs, batch_targets, forward_logits


class Classifier(LightningModule):
    """Cross-entropy training of ``net`` on ``(inputs, target)`` batches (inputs a tensor, or a tuple of tensors
    passed as ``net(*inputs)``) or dict batches.

    A dict batch (Hugging Face style) holds the target under ``label_key`` and the network's keyword
    inputs under its other keys; the network is then called as ``net(**inputs)``. Its output is the
    logits or any output :mod:`lightning_dynamical.tasks.batches` reads logits from (``.logits``, ...).

    Args:
        net: the network, ``(batch, ...) -> (batch, num_classes)`` (or keyword inputs to logits).
        num_classes: number of classes (for the accuracy metrics).
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        lr: learning rate.
        weight_decay: L2 penalty.
        momentum: SGD momentum.
        label_key: the target's key in dict batches.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 10,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        label_key: str = LABEL_KEY,
    ) -> None:
        super().__init__()
        check_positive_number("lr", lr)
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.label_key = label_key
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, *x: Tensor, **inputs: Any) -> Any:
        """``net(x)`` for a tensor batch, ``net(x1, x2, ...)`` for the positional inputs of a ``((x1, x2, ...), y)``
        batch, ``net(**inputs)`` for the keyword inputs of a dict batch."""
        if x and inputs:
            raise TypeError(f"Classifier takes positional or keyword inputs, not both; got {len(x)} positional and "
                            f"{sorted(inputs)}")
        return self.net(*x) if x else self.net(**inputs)

    def _step(self, batch: Any, stage: str, metric: MulticlassAccuracy) -> Tensor:
        inputs = batch_inputs(batch, self.label_key)
        y = batch_targets(batch, self.label_key)
        logits = forward_logits(self, inputs)
        loss = nn.functional.cross_entropy(logits, y)
        metric(logits, y)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=len(y))
        self.log(f"{stage}_acc", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp: Any = self.hparams
        if hp.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
