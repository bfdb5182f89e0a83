"""Before ``fit`` resumes from a checkpoint: continue where the interrupted run wrote its W&B run and model files."""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_dynamical.reporting import wandb_runs


def read_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint's plain contents, memory-mapped (tensors are not read until touched)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def prepare(trainer: Trainer, ckpt_path: str | None) -> None:
    """Link W&B runs (:func:`wandb_runs.prepare`) and keep each unconfigured ``ModelCheckpoint`` in the folder the
    checkpoint's run used.

    A resumed W&B run has a new id, and ``ModelCheckpoint`` names its folder after it; without this its state
    (``last_model_path`` and the best ``k`` models) would not be restored and Lightning would warn about it.
    Lightning also warns that a checkpoint folder "exists and is not empty"; for the folder being continued
    that is expected, so that one warning is silenced for that one folder.
    """
    checkpoint = read_checkpoint(ckpt_path) if ckpt_path else {}
    link = checkpoint.get(wandb_runs.CHECKPOINT_KEY)
    wandb_runs.prepare(trainer.loggers, link if isinstance(link, dict) else None)
    states = checkpoint.get("callbacks", {})
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        state = states.get(callback.state_key)
        if callback.dirpath is None and isinstance(state, dict) and state.get("dirpath"):
            callback.dirpath = state["dirpath"]
            warnings.filterwarnings("ignore", message=f"Checkpoint directory {re.escape(str(callback.dirpath))} "
                                    "exists and is not empty")
