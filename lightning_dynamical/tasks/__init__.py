"""What a task means to the loop and the scorers: the batch contract (inputs, targets and logits from any batch
and output, :mod:`.batches`), and the task itself (:class:`Task`: its loss, pseudo targets, metrics and valid
logits, targets and labels; :class:`Classification` by default, :class:`MultiLabel`, :class:`Segmentation`,
:class:`TokenClassification`)."""

from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.classification import CLASSIFICATION, Classification
from lightning_dynamical.tasks.multilabel import MultiLabel
from lightning_dynamical.tasks.names import TASKS, TaskName, task_of
from lightning_dynamical.tasks.positions import PerPosition
from lightning_dynamical.tasks.segmentation import Segmentation
from lightning_dynamical.tasks.tokens import EntityF1, TokenClassification

__all__ = ["CLASSIFICATION", "TASKS", "Classification", "EntityF1", "MultiLabel", "PerPosition", "Segmentation", "Task",
           "TaskName", "TokenClassification", "task_of"]
