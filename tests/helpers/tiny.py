"""Tiny active-learning runs for the tests: toy or digits data in an ``ActiveLearningDataModule``, a quiet one-CPU
``Trainer``, one fit with an ``ActiveLearningLoop``, and the few readers the tests check its records with.

A test states what it is about (the loop's arguments, the strategy, the sizes that matter) and leaves the rest here::

    dm = toy_datamodule(batch_size=16)
    loop = ActiveLearningLoop(Random(), query_size=5, rounds=1, max_epochs_per_round=1, dirpath=str(tmp_path))
    fit_loop(toy_classifier(), dm, loop, tmp_path)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier
from lightning_dynamical.data.digits import build_digits

Root = str | os.PathLike[str]


def toy_dataset(n: int = 60, classes: int = 2, features: int = 4, seed: int = 0) -> TensorDataset:
    """``n`` seeded Gaussian points, labeled by which of ``classes`` equal slices of [-1, 1] holds the first feature."""
    x = torch.randn(n, features, generator=torch.Generator().manual_seed(seed))
    y = torch.bucketize(x[:, 0].contiguous(), torch.linspace(-1, 1, classes + 1)[1:-1])  # classes=2: x[:, 0] > 0
    return TensorDataset(x, y)


def toy_datamodule(n: int = 60, classes: int = 2, test_size: int = 10, initial_size: int = 10, seed: int = 0,
                   **options: Any) -> ActiveLearningDataModule:
    """A :func:`toy_dataset` pool whose first ``test_size`` points also serve as the test set (none for 0)."""
    data = toy_dataset(n, classes, seed=seed)
    test = TensorDataset(*(t[:test_size] for t in data.tensors)) if test_size else None
    return ActiveLearningDataModule(data, test=test, initial_size=initial_size, **options)


def toy_classifier(classes: int = 2) -> Classifier:
    """A linear ``Classifier`` for :func:`toy_dataset`'s four features."""
    return Classifier(nn.Linear(4, classes), num_classes=classes)


def digits_datamodule(initial_size: int = 40, batch_size: int = 32, test_size: int = 300,
                      **options: Any) -> ActiveLearningDataModule:
    """scikit-learn's 8x8 digits, ``test_size`` held out for test, in an ``ActiveLearningDataModule``."""
    splits = build_digits(test_size=test_size)
    return ActiveLearningDataModule(splits.pool, None, splits.test, initial_size=initial_size, batch_size=batch_size,
                                    **options)


def quiet_trainer(root: Root | None, callbacks: Sequence[L.Callback] = (), **options: Any) -> L.Trainer:
    """A one-CPU ``Trainer`` that trains until a loop stops it; no logger, checkpointing, progress bar or summary."""
    settings: dict[str, Any] = {"max_epochs": -1, "accelerator": "cpu", "devices": 1, "logger": False,
                                "enable_checkpointing": False, "enable_progress_bar": False,
                                "enable_model_summary": False, "default_root_dir": None if root is None else str(root)}
    return L.Trainer(callbacks=list(callbacks), **{**settings, **options})


def fit_loop(model: L.LightningModule, datamodule: L.LightningDataModule, loop: ActiveLearningLoop, root: Root,
             callbacks: Sequence[L.Callback] = (), ckpt_path: str | None = None, **options: Any) -> L.Trainer:
    """Fit ``model`` with ``loop`` (then ``callbacks``) in a :func:`quiet_trainer` over ``root``; the trainer."""
    trainer = quiet_trainer(root, [loop, *callbacks], **options)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


class CrashAtRound(L.Callback):
    """Raises ``RuntimeError("simulated crash")`` as the first epoch of ``loop``'s round ``at_round`` starts."""

    def __init__(self, loop: ActiveLearningLoop, at_round: int) -> None:
        self.loop, self.at_round = loop, at_round

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.loop.round == self.at_round:
            raise RuntimeError("simulated crash")


def read_csv(path: Root) -> list[dict[str, str]]:
    """A CSV file's rows as dicts keyed by its header."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def comparable_state(path: Root) -> dict[str, Any]:
    """An ``al_state.json`` without its wall-clock timings (``score_seconds``), to compare two runs."""
    with open(path) as f:
        state = json.load(f)
    for row in state["history"]:
        row.pop("score_seconds")
    return state


def digest(path: Root) -> str:
    """The SHA-256 of a file's bytes: equal digests before and after mean the file was left alone."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
