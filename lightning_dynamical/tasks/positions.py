"""One class per position (pixel, token): cross-entropy per position, averaged over each sample's labeled positions.

The shared base of :class:`~lightning_dynamical.tasks.segmentation.Segmentation` (classes on dim 1 of the logits)
and :class:`~lightning_dynamical.tasks.tokens.TokenClassification` (classes last): the one implementation of their
loss, its closed-form output gradient, pseudo targets, pixel/token accuracy and label checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.tasks.base import Task

if TYPE_CHECKING:
    from lightning_dynamical.tasks.batches import Inputs


@dataclass(frozen=True)
class PerPosition(Task):
    """A class index per position of the logits; targets hold ``ignore_index`` where a position is unlabeled.

    Per-sample loss: the **mean** over the sample's labeled positions of the per-position cross-entropy (summed over
    the batch: :attr:`~lightning_dynamical.tasks.base.Task.sums_over_samples`), so a sample's weight does not grow
    with its size or shrink with its ignored positions. A sample without labeled positions has loss and gradient 0.

    Args:
        ignore_index: the target value of unlabeled positions (left out of the loss, its mean and the metrics).
    """

    ignore_index: int = -100

    class_dim: ClassVar[int] = 1
    """The logits' class dimension (1: ``(batch, classes, *positions)``; 2: ``(batch, tokens, classes)``)."""
    label_from_input = True

    def __post_init__(self) -> None:
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
            raise ConfigError(f"{type(self).__name__} ignore_index must be an int, got {self.ignore_index!r}")

    def check_output(self, logits: Tensor, batch: int | None = None) -> Tensor:
        """Also refuses an ``ignore_index`` that is one of the model's classes: positions whose pseudo label is that
        class would count as unlabeled and drop out of the scores."""
        logits = super().check_output(logits, batch)
        classes = logits.shape[self.class_dim]
        if 0 <= self.ignore_index < classes:
            raise ValueError(f"The {self.name} task's ignore_index={self.ignore_index} is one of the model's {classes} "
                             f"classes (0..{classes - 1}): it marks unlabeled positions, so give a value outside "
                             f"them (-100, the default, or 255 for uint8 masks)")
        return logits

    def classes_first(self, logits: Tensor) -> Tensor:
        """The logits with :attr:`class_dim` moved to dim 1 (a view)."""
        return logits.movedim(self.class_dim, 1)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``sum_i mean_{p labeled in i} CE(logits_i at p, targets_i[p])``."""
        ce = nn.functional.cross_entropy(self.classes_first(logits), targets, reduction="none",
                                         ignore_index=self.ignore_index)
        return (ce.flatten(1).sum(1) / self._counts(targets)).sum()

    def _counts(self, targets: Tensor) -> Tensor:
        """Labeled positions per sample (at least 1, so a fully ignored sample has loss and gradient 0)."""
        return (targets != self.ignore_index).flatten(1).sum(1).clamp_min(1)

    def pseudo_targets(self, logits: Tensor) -> Tensor:
        """The ``argmax`` over the classes at every position (int64, ``(batch, *positions)``)."""
        return logits.detach().argmax(self.class_dim)

    def batch_pseudo_targets(self, logits: Tensor, inputs: Inputs | None = None) -> Tensor:
        """:meth:`pseudo_targets`, ``ignore_index`` where :meth:`real_positions` says a position is padding."""
        y = self.pseudo_targets(logits)
        real = self.real_positions(logits, inputs)
        return y if real is None else y.masked_fill(~real, self.ignore_index)

    def output_gradient(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``(softmax(logits) - onehot(targets)) / labeled positions`` per sample, 0 at ignored positions (closed
        form)."""
        d = self.class_dim
        p = torch.softmax(logits.detach(), d)
        valid = targets != self.ignore_index
        onehot = torch.zeros_like(p).scatter_(d, targets.where(valid, 0).unsqueeze(d), 1.0)
        scale = valid.to(p.dtype) / self._counts(targets).to(p.dtype).view(-1, *([1] * (targets.ndim - 1)))
        return (p - onehot) * scale.unsqueeze(d)

    def concat_targets(self, parts: Sequence[Tensor]) -> Tensor:
        """Batches' targets along dim 0, each position dim padded to the longest with ``ignore_index`` (token batches
        padded per batch differ in length)."""
        if len({tuple(t.shape[1:]) for t in parts}) <= 1:
            return torch.cat(list(parts))
        size = [max(t.shape[k] for t in parts) for k in range(1, parts[0].ndim)]
        out = parts[0].new_full((sum(t.shape[0] for t in parts), *size), self.ignore_index)
        start = 0
        for t in parts:
            out[(slice(start, start + t.shape[0]), *(slice(0, n) for n in t.shape[1:]))] = t
            start += t.shape[0]
        return out

    def accuracy(self, num_classes: int) -> Metric:
        """Accuracy over the labeled positions (pixel or token accuracy)."""
        return MulticlassAccuracy(num_classes, average="micro", ignore_index=self.ignore_index)

    def label_problem(self, label: Tensor, num_classes: int | None, shape: tuple[int, ...] | None) -> str | None:
        """Labels may hold ``ignore_index`` besides the classes."""
        return super().label_problem(label.where(label != self.ignore_index, 0), num_classes, shape)
