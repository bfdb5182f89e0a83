"""Multi-label classification: logits ``(batch, labels)``, one sigmoid per label, binary cross-entropy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MultilabelAccuracy, MultilabelF1Score

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.tasks.base import Task


@dataclass(frozen=True)
class MultiLabel(Task):
    """Any number of labels per sample: logits ``(batch, labels)``, one independent sigmoid per label.

    Per-sample loss ``sum_k BCE(sigmoid(f(x_i)_k), y_ik)`` (summed over the labels, then over the batch:
    :attr:`~lightning_dynamical.tasks.base.Task.sums_over_samples`); pseudo targets
    ``sigmoid(f(x_i)) > threshold`` as floats (0/1). Targets are ``(batch, labels)`` of 0/1 (or soft values in
    ``[0, 1]``), any dtype; they are cast to the logits' dtype.

    Args:
        threshold: a label is predicted when its sigmoid exceeds it, in ``(0, 1)``.
    """

    threshold: float = 0.5

    name = "multi-label"
    logits_shape = "(batch, labels)"
    metric_name = "f1"
    min_classes = 1

    def __post_init__(self) -> None:
        t = float(self.threshold)
        if math.isnan(t) or not 0 < t < 1:
            raise ConfigError(f"MultiLabel threshold must be in (0, 1), got {self.threshold!r}")
        object.__setattr__(self, "threshold", t)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``sum_i sum_k BCE_with_logits(logits_ik, targets_ik)``."""
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")

    def pseudo_targets(self, logits: Tensor) -> Tensor:
        """``sigmoid(logits) > threshold`` in the logits' dtype, ``(batch, labels)``."""
        logits = logits.detach()
        return (torch.sigmoid(logits) > self.threshold).to(logits.dtype)

    def logits_ok(self, logits: Tensor) -> bool:
        return logits.ndim == 2

    def prepare_targets(self, targets: Tensor, logits: Tensor) -> Tensor:
        if targets.shape != logits.shape or targets.is_complex():
            raise self.targets_error(targets, logits, f"shape {tuple(logits.shape)} (batch, labels) of 0/1")
        return targets.to(device=logits.device, dtype=logits.dtype)

    def metric_targets(self, targets: Tensor) -> Tensor:
        """Soft targets count as present from 0.5."""
        return (targets >= 0.5).long()

    def metric_inputs(self, logits: Tensor) -> Tensor:
        """Probabilities: torchmetrics would read logits that happen to lie in [0, 1] as probabilities."""
        return torch.sigmoid(logits.detach())

    def accuracy(self, num_classes: int) -> Metric:
        """Per-label accuracy over every (sample, label) pair."""
        return MultilabelAccuracy(num_classes, threshold=self.threshold, average="micro")

    def metric(self, num_classes: int) -> Metric:
        """Micro F1 over every (sample, label) pair."""
        return MultilabelF1Score(num_classes, threshold=self.threshold, average="micro")

    def target_problem(self, targets: Tensor) -> str | None:
        return None if targets.ndim == 2 and not targets.is_complex() else "a 0/1 row per sample, shape (batch, labels)"

    def label_problem(self, label: Tensor, num_classes: int | None, shape: tuple[int, ...] | None) -> str | None:
        """A label is a 0/1 vector as wide as the data set's own label sets (else ``num_classes``)."""
        width = shape[0] if shape else num_classes
        if label.ndim != 1 or (width is not None and label.shape[0] != width):
            return f"shape {tuple(label.shape)}, expected ({width if width is not None else 'labels'},)"
        if not bool(((label == 0) | (label == 1)).all()):
            return "values other than 0 and 1"
        return None

    def output_gradient(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``sigmoid(logits) - targets`` (the closed form of BCE with logits)."""
        return torch.sigmoid(logits.detach()) - targets.to(logits.dtype)
