"""W&B runs of one active-learning experiment: resumed runs join the original's group and name; where runs are.

An offline W&B run cannot be resumed under its own id, so every resume from a round checkpoint starts a new run.
:func:`prepare` gives a fresh run a group (unless one is configured) and a resumed run the group and name that the
loop recorded in the checkpoint (:func:`identity`), so W&B lists the original and its resumptions together.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, WandbLogger

CHECKPOINT_KEY = "wandb_run"


def prepare(loggers: Iterable[Logger], link: dict[str, Any] | None = None) -> None:
    """Before any W&B run starts: join the run ``link`` (:func:`identity` of the checkpoint's run) or start a group.

    Touches only ``WandbLogger``s whose run has not started (``wandb.init``'s arguments are still pending in
    ``WandbLogger._wandb_init``) and never overrides a group or name the user configured. Also drops Lightning's
    ``anonymous=None``: wandb >= 0.19 warns that the setting has no effect, whatever its value.
    """
    for logger in loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is not None:
            continue
        init = logger._wandb_init
        if init.get("anonymous") is None:
            init.pop("anonymous", None)
        if init.get("group") is None and "WANDB_RUN_GROUP" not in os.environ:
            init["group"] = link["group"] if link and link.get("group") else _new_group()
        if link and link.get("name") and init.get("name") is None:
            init["name"] = logger._name = link["name"]


def identity(trainer: Trainer) -> dict[str, Any] | None:
    """Group, name and id of the first started W&B run (rank zero), for the loop to record in its checkpoints."""
    if not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            run = logger.experiment
            return {"group": run.group or run.id, "name": run.name, "id": run.id}
    return None


def describe(trainer: Trainer) -> list[str]:
    """Where each started W&B run lives, with the command that uploads an offline one."""
    lines = []
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            run = logger.experiment
            if run.settings.mode == "offline":
                lines.append(f"W&B run       {run.settings.sync_dir} (offline, group {run.group})")
                lines.append(f"upload with   wandb sync {run.settings.sync_dir}")
            else:
                lines.append(f"W&B run       {run.url} (group {run.group})")
    return lines


def _new_group() -> str:
    return f"al-{uuid.uuid4().hex[:8]}"
