"""What a task means to the loop and the scorers: the batch contract (inputs, targets and logits from any batch
and output, :mod:`.batches`), and the task itself (:class:`Task`: its loss, pseudo targets and valid logits and
targets; :class:`Classification` by default, :class:`MultiLabel`)."""

from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.classification import CLASSIFICATION, Classification
from lightning_dynamical.tasks.multilabel import MultiLabel

__all__ = ["CLASSIFICATION", "Classification", "MultiLabel", "Task"]
