"""Dense (semantic) segmentation: logits ``(batch, classes, *spatial)``, cross-entropy per position, averaged over
each sample's labeled positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lightning_dynamical.tasks.base import Task


@dataclass(frozen=True)
class Segmentation(Task):
    """One class per pixel (any number of spatial dims): logits ``(batch, classes, H, W)``, targets ``(batch, H, W)``
    class indices, ``ignore_index`` where a pixel is unlabeled.

    Per-sample loss: the **mean** over the sample's labeled pixels of the per-pixel cross-entropy (summed over the
    batch: :attr:`~lightning_dynamical.tasks.base.Task.sums_over_samples`), so a sample's weight does not grow with
    its image size or shrink with its ignored pixels; a sum over pixels would rank large, fully labeled images first.
    Pseudo targets: the per-pixel ``argmax``. Metric: mean IoU over the classes (``test_miou``, the Jaccard index
    of the confusion matrix accumulated over the data set); the fit test reads pixel accuracy.

    Args:
        ignore_index: the target value of unlabeled pixels (left out of the loss, its mean and the metrics).
    """

    ignore_index: int = -100

    name = "segmentation"
    logits_shape = "(batch, classes, height, width)"
    metric_name = "miou"
    label_from_input = True

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``sum_i mean_{p labeled in i} CE(logits_i[:, p], targets_i[p])``."""
        ce = nn.functional.cross_entropy(logits, targets, reduction="none", ignore_index=self.ignore_index)
        return (ce.flatten(1).sum(1) / self._counts(targets)).sum()

    def _counts(self, targets: Tensor) -> Tensor:
        """Labeled positions per sample (at least 1, so a fully ignored sample has loss and gradient 0)."""
        return (targets != self.ignore_index).flatten(1).sum(1).clamp_min(1)

    def pseudo_targets(self, logits: Tensor) -> Tensor:
        """The per-pixel ``argmax`` over the classes (int64, ``(batch, *spatial)``)."""
        return logits.detach().argmax(1)

    def logits_ok(self, logits: Tensor) -> bool:
        return logits.ndim >= 3

    def prepare_targets(self, targets: Tensor, logits: Tensor) -> Tensor:
        spatial = (logits.shape[0], *logits.shape[2:])
        if tuple(targets.shape) != tuple(spatial) or targets.is_floating_point() or targets.is_complex():
            raise self.targets_error(targets, logits, f"shape {tuple(spatial)} (batch, *spatial) of class indices")
        return targets.to(logits.device, torch.long)

    def output_gradient(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``(softmax(logits) - onehot(targets)) / labeled pixels`` per sample, 0 at ignored pixels (closed form)."""
        p = torch.softmax(logits.detach(), 1)
        valid = targets != self.ignore_index
        onehot = torch.zeros_like(p).scatter_(1, targets.where(valid, 0).unsqueeze(1), 1.0)
        scale = valid.to(p.dtype) / self._counts(targets).to(p.dtype).view(-1, *([1] * (targets.ndim - 1)))
        return (p - onehot) * scale.unsqueeze(1)

    def accuracy(self, num_classes: int) -> Metric:
        """Pixel accuracy over the labeled pixels."""
        return MulticlassAccuracy(num_classes, average="micro", ignore_index=self.ignore_index)

    def metric(self, num_classes: int) -> Metric:
        """Mean IoU over the classes (confusion matrix accumulated over the data set)."""
        return MulticlassJaccardIndex(num_classes, average="macro", ignore_index=self.ignore_index)

    def target_problem(self, targets: Tensor) -> str | None:
        if targets.dtype.is_floating_point or targets.is_complex() or targets.dtype == torch.bool or targets.ndim < 2:
            return "an int class index per pixel, shape (batch, height, width)"
        return None

    def label_shape(self, inputs: Tensor) -> tuple[int, ...]:
        """A mask has the input's spatial shape (its dims after the channels)."""
        return tuple(inputs.shape[1:])

    def label_problem(self, label: Tensor, num_classes: int | None, shape: tuple[int, ...] | None) -> str | None:
        """Masks may hold ``ignore_index`` besides the classes."""
        return super().label_problem(label.where(label != self.ignore_index, 0), num_classes, shape)
