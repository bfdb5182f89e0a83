"""Tasks by name, as configs give them (``task: segmentation``)."""

from __future__ import annotations

from typing import Literal

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.classification import Classification
from lightning_dynamical.tasks.multilabel import MultiLabel
from lightning_dynamical.tasks.segmentation import Segmentation
from lightning_dynamical.tasks.tokens import TokenClassification

TaskName = Literal["classification", "multilabel", "segmentation", "token_classification"]
TASKS: dict[str, type[Task]] = {"classification": Classification, "multilabel": MultiLabel,
                                "segmentation": Segmentation, "token_classification": TokenClassification}
"""Each task name and its class, built with default settings."""


def task_of(task: Task | str) -> Task:
    """The task ``task`` names (a :class:`Task` is returned as is); a :class:`ConfigError` lists the names."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str) and task in TASKS:
        return TASKS[task]()
    raise ConfigError(f"task must be one of {sorted(TASKS)} or a Task instance, got {task!r}")
