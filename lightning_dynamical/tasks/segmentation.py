"""Dense (semantic) segmentation: logits ``(batch, classes, *spatial)``, cross-entropy per position, averaged over
each sample's labeled positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassJaccardIndex

from lightning_dynamical.tasks.positions import PerPosition


@dataclass(frozen=True)
class Segmentation(PerPosition):
    """One class per pixel (any number of spatial dims): logits ``(batch, classes, H, W)``, targets ``(batch, H, W)``
    class indices, ``ignore_index`` where a pixel is unlabeled.

    Per-sample loss: the **mean** over the sample's labeled pixels of the per-pixel cross-entropy (summed over the
    batch: :attr:`~lightning_dynamical.tasks.base.Task.sums_over_samples`), so a sample's weight does not grow with
    its image size or shrink with its ignored pixels; a sum over pixels would rank large, fully labeled images first.
    Pseudo targets: the per-pixel ``argmax``. Metric: mean IoU over the classes (``test_miou``, the Jaccard index
    of the confusion matrix accumulated over the data set); the fit test reads pixel accuracy. The loss, its
    gradient, pseudo targets and accuracy are :class:`~lightning_dynamical.tasks.positions.PerPosition`'s.

    Args:
        ignore_index: the target value of unlabeled pixels (left out of the loss, its mean and the metrics).
    """

    name = "segmentation"
    logits_shape = "(batch, classes, height, width)"
    metric_name = "miou"

    def logits_ok(self, logits: Tensor) -> bool:
        return logits.ndim >= 3

    def prepare_targets(self, targets: Tensor, logits: Tensor) -> Tensor:
        spatial = (logits.shape[0], *logits.shape[2:])
        if tuple(targets.shape) != tuple(spatial) or targets.is_floating_point() or targets.is_complex():
            raise self.targets_error(targets, logits, f"shape {tuple(spatial)} (batch, *spatial) of class indices")
        return targets.to(logits.device, torch.long)

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
