"""What a task is to the scorers: the one place that says which loss is differentiated, how pseudo targets come
from logits, and which logits and targets are valid.

dynamicAL scores ``||g_u||^2 + gamma * g_u . G_S`` where ``g_u`` is the gradient of the task's loss of sample
``u`` at its pseudo target and ``G_S`` the summed gradient of the labeled set's losses at their targets; every
engine, :func:`~lightning_dynamical.scoring.common.summed_gradient` and the diagnostics take these from a
:class:`Task` (default :class:`~lightning_dynamical.tasks.classification.Classification`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

OUTPUT_FORMS = "a tensor, .logits, ['logits'] or a tuple with logits first"
"""How a model may return its logits (see :func:`~lightning_dynamical.tasks.batches.logits_of`)."""


class Task(ABC):
    """A learning task: its loss, its pseudo targets and the shapes of its logits and targets.

    Subclasses define :meth:`loss`, :meth:`pseudo_targets`, :meth:`logits_ok` and :meth:`prepare_targets`, and
    say how their loss is built from the samples with :attr:`sums_over_samples`. Make them frozen dataclasses
    (their repr, equality and hash then follow their settings; a strategy's repr shows its task).

    Attributes:
        name: the task's name in error messages (``"classification"``).
        logits_shape: the logits' expected shape in words (``"(batch, classes)"``).
        sums_over_samples: ``True`` when ``loss(logits, targets)`` is the sum over dim 0 (the samples) of each
            sample's loss, and sample ``i``'s loss reads only row ``i`` of the logits and of the targets (the
            positions or classes inside a sample may be summed or averaged in any way). Then the gradient of the
            batch loss w.r.t. the logits holds every sample's gradient in its own row, which is what the fast and
            last-layer closed forms rely on (their run-time proof checks the model, not the loss). ``False``: the
            engines compute every sample's gradient on the exact path, from its loss as a batch of one.
    """

    name: ClassVar[str] = "task"
    logits_shape: ClassVar[str] = "(batch, ...)"
    sums_over_samples: ClassVar[bool] = True

    @abstractmethod
    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The scalar loss of a batch. On a batch of one it is the per-sample loss whose gradient is scored; on a
        larger batch, the sum of the per-sample losses (see :attr:`sums_over_samples`)."""

    @abstractmethod
    def pseudo_targets(self, logits: Tensor) -> Tensor:
        """The targets the model predicts (detached; row ``i`` from row ``i`` of the logits alone)."""

    @abstractmethod
    def logits_ok(self, logits: Tensor) -> bool:
        """Whether a logits tensor of a batch has this task's shape and dtype (its dim 0 is checked apart)."""

    @abstractmethod
    def prepare_targets(self, targets: Tensor, logits: Tensor) -> Tensor:
        """A labeled batch's targets, checked against the logits and moved to their device (and dtype where the loss
        needs it); raises a one-line ``ValueError`` naming the task, the shape seen and the shape expected."""

    def check_output(self, logits: Tensor, batch: int | None = None) -> Tensor:
        """The logits, if they have this task's shape (and ``batch`` rows when given); else a one-line
        ``ValueError`` naming the task, the shape seen and the shape expected."""
        rows_ok = batch is None or (logits.ndim > 0 and logits.shape[0] == batch)
        if not (rows_ok and self.logits_ok(logits)):
            raise ValueError(self.output_error(tuple(logits.shape), batch))
        return logits

    def output_error(self, seen: object, batch: int | None = None) -> str:
        """The message of a refused model output (``seen``: its shape, or its type when it holds no logits)."""
        of = f" for a batch of {batch}" if batch is not None else ""
        return (f"The model must return logits of shape {self.logits_shape} for the {self.name} task ({OUTPUT_FORMS});"
                f" got {seen}{of}")

    def targets_error(self, targets: Tensor, logits: Tensor, expected: str) -> ValueError:
        """The error of refused targets: the task, the targets' shape and dtype, and what was expected."""
        dtype = str(targets.dtype).replace("torch.", "")
        return ValueError(f"The {self.name} task needs targets of {expected} for logits of shape "
                          f"{tuple(logits.shape)}; got {tuple(targets.shape)} {dtype}")

    def output_gradient(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``d loss / d logits`` at detached ``logits``: row ``i`` is sample ``i``'s gradient when
        :attr:`sums_over_samples`. By autograd here; subclasses may give the closed form."""
        with torch.enable_grad():
            z = logits.detach().requires_grad_()
            return torch.autograd.grad(self.loss(z, targets), z)[0]
