"""Single-label classification: logits ``(batch, classes)``, cross-entropy, pseudo label ``argmax``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from lightning_dynamical.tasks.base import Task


def softmax_minus_onehot(p: Tensor, y: Tensor) -> Tensor:
    """``p - onehot(y)`` as a new tensor: d CE_sum / d logits per sample, for softmax outputs ``p`` and labels ``y``."""
    e = p.clone()
    e[torch.arange(y.shape[0], device=y.device), y] -= 1
    return e


@dataclass(frozen=True)
class Classification(Task):
    """One class per sample: logits ``(batch, classes)``; per-sample loss ``CE(f(x_i), y_i)`` (summed over the batch,
    :attr:`~lightning_dynamical.tasks.base.Task.sums_over_samples`); pseudo label ``argmax f(x_i)``.

    Targets are ``(batch,)`` class indices (int64), or ``(batch, classes)`` class probabilities as
    ``F.cross_entropy`` takes them.
    """

    name = "classification"
    logits_shape = "(batch, classes)"

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``sum_i CE(logits_i, targets_i)``."""
        return nn.functional.cross_entropy(logits, targets, reduction="sum")

    def pseudo_targets(self, logits: Tensor) -> Tensor:
        """``argmax`` over the classes (int64, ``(batch,)``)."""
        return logits.detach().argmax(1)

    def logits_ok(self, logits: Tensor) -> bool:
        return logits.ndim == 2

    def prepare_targets(self, targets: Tensor, logits: Tensor) -> Tensor:
        indices = targets.ndim == 1 and not (targets.is_floating_point() or targets.is_complex())
        probabilities = targets.is_floating_point() and targets.shape == logits.shape
        if not (indices or probabilities) or targets.shape[0] != logits.shape[0]:
            raise self.targets_error(targets, logits, "shape (batch,) (class indices) or (batch, classes) "
                                                      "(class probabilities)")
        return targets.to(logits.device, torch.long if indices else targets.dtype)

    def metric_targets(self, targets: Tensor) -> Tensor:
        """Class probabilities count as their most likely class."""
        return targets.argmax(1) if targets.ndim == 2 else targets

    def accuracy(self, num_classes: int) -> Metric:
        return MulticlassAccuracy(num_classes, average="micro")

    def target_problem(self, targets: Tensor) -> str | None:
        if targets.dtype.is_floating_point or targets.is_complex() or targets.dtype == torch.bool or targets.ndim != 1:
            return "one int class index per sample, shape (batch,)"
        return None

    def output_gradient(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``softmax(logits) - onehot(targets)`` for class indices (the closed form), else by autograd."""
        if targets.ndim != 1:
            return super().output_gradient(logits, targets)
        return softmax_minus_onehot(torch.softmax(logits.detach(), 1), targets)


CLASSIFICATION = Classification()
"""The default task of every scorer: single-label classification."""
