"""Tasks by name, as configs give them (``task: segmentation``)."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Literal

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


def task_state(task: Task) -> dict[str, Any]:
    """A task as plain data (its class path and settings), for checkpoints that must load with ``weights_only``."""
    settings: dict[str, Any] = dataclasses.asdict(task) if dataclasses.is_dataclass(task) else {}
    return {"class_path": f"{type(task).__module__}.{type(task).__qualname__}",
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}


def task_from_state(state: dict[str, Any]) -> Task:
    """The task :func:`task_state` described (a :class:`ConfigError` when its class is not a task)."""
    module, _, name = str(state["class_path"]).rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"{state['class_path']!r} is not a lightning_dynamical Task")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(state.get("settings", {})).items()}
    return cls(**settings)
