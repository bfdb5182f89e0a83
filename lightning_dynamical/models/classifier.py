"""``Classifier``: a plain LightningModule around any network that returns logits, trained with its task's loss."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_dynamical.errors import ConfigError, check_optional_positive_int, check_positive_number
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import LABEL_KEY, batch_inputs, batch_targets, forward_logits
from lightning_dynamical.tasks.classification import CLASSIFICATION
from lightning_dynamical.tasks.names import TaskName, task_from_state, task_of, task_state

STAGES = ("train", "val", "test")
TASK_KEY = "lightning_dynamical_task"
"""The checkpoint entry holding the module's task (:func:`~lightning_dynamical.tasks.names.task_state`)."""


class Classifier(LightningModule):
    """Training of ``net`` with the task's loss on ``(inputs, target)`` batches (inputs a tensor, or a tuple of
    tensors passed as ``net(*inputs)``) or dict batches; logs ``<stage>_loss``, ``<stage>_acc`` and, for tasks
    whose headline metric is not accuracy, ``<stage>_<metric>`` (``val_miou``, ``test_f1``).

    The task is named once, on the :class:`~lightning_dynamical.ActiveLearningDataModule`: with ``task=None`` the
    module takes the trainer's data module's task at setup (classification without one). A dict batch (Hugging
    Face style) holds the target under ``label_key`` and the network's keyword inputs under its other keys; the
    network is then called as ``net(**inputs)``. Its output is the logits or any output
    :mod:`lightning_dynamical.tasks.batches` reads logits from (``.logits``, ...).

    Args:
        net: the network, ``(batch, ...) -> logits`` of the task's shape (or keyword inputs to logits).
        num_classes: classes (or labels) of the metrics (default: the data module's, else the logits' width).
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        lr: learning rate.
        weight_decay: L2 penalty.
        momentum: SGD momentum.
        label_key: the target's key in dict batches.
        task: the task when the module is used without an active-learning data module (``None``: the data
            module's).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int | None = None,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        label_key: str = LABEL_KEY,
        task: TaskName | Task | None = None,
    ) -> None:
        super().__init__()
        check_positive_number("lr", lr)
        check_optional_positive_int("num_classes", num_classes)
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.label_key = label_key
        self.task = task_of(task) if task is not None else CLASSIFICATION
        self._task_given = task is not None
        self._metrics: dict[str, tuple[Metric, Metric | None]] = {}

    def setup(self, stage: str) -> None:
        """Take the data module's task (a task given here must be the same) and build the metrics when the classes
        are known."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        theirs = getattr(datamodule, "task", None)
        if isinstance(theirs, Task):
            if self._task_given and theirs != self.task:
                raise ConfigError(f"Classifier(task={self.task!r}) differs from the data module's task {theirs!r}; "
                                  "name the task once, on the data module (Classifier(task=None) takes it)")
            self.task = theirs
        classes = self.hparams.get("num_classes") or getattr(datamodule, "num_classes", None)
        if classes:
            self._build_metrics(int(classes))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The task as plain data, so a model reloaded without its data module keeps its loss and metrics."""
        checkpoint[TASK_KEY] = task_state(self.task)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if TASK_KEY in checkpoint and not self._task_given:
            self.task = task_from_state(checkpoint[TASK_KEY])

    def _build_metrics(self, classes: int) -> None:
        """``<stage>_acc`` and the headline metric per stage, as child modules (moved and synced with the model)."""
        for stage in STAGES:
            accuracy, headline = self.task.accuracy(classes), self.task.metric(classes)
            setattr(self, f"{stage}_acc", accuracy)
            if headline is not None:
                setattr(self, f"{stage}_{self.task.metric_name}", headline)
            self._metrics[stage] = (accuracy, headline)

    def forward(self, *x: Tensor, **inputs: Any) -> Any:
        """``net(x)`` for a tensor batch, ``net(x1, x2, ...)`` for the positional inputs of a ``((x1, x2, ...), y)``
        batch, ``net(**inputs)`` for the keyword inputs of a dict batch."""
        if x and inputs:
            raise TypeError(f"Classifier takes positional or keyword inputs, not both; got {len(x)} positional and "
                            f"{sorted(inputs)}")
        return self.net(*x) if x else self.net(**inputs)

    def _step(self, batch: Any, stage: str) -> Tensor:
        inputs = batch_inputs(batch, self.label_key)
        logits = forward_logits(self, inputs, self.task)
        y = self.task.prepare_targets(batch_targets(batch, self.label_key), logits)
        loss = self.task.loss(logits, y) / max(int(logits.shape[0]), 1)
        if stage not in self._metrics:
            self._build_metrics(self.task.classes_of(logits))
            for m in self._metrics.values():
                for metric in m:
                    if metric is not None:
                        metric.to(logits.device)
        n = int(logits.shape[0])
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=n)
        targets = self.task.metric_targets(y)
        for metric, name in zip(self._metrics[stage], ("acc", self.task.metric_name)):
            if metric is not None:
                metric(self.task.metric_inputs(logits), targets)
                self.log(f"{stage}_{name}", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=n,
                         metric_attribute=f"{stage}_{name}")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp: Any = self.hparams
        if hp.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
