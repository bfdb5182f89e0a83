"""Rich per-round logging (learning curve, score histogram, queried samples) for loggers that support it.

Only a :class:`~lightning.pytorch.loggers.WandbLogger` gets these; other loggers see the loop's scalars only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torch.utils.data import Subset

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.records.queries import Query
from lightning_dynamical.tasks.batches import batch_size, evaluation, forward_logits, split_batch, to_model

MAX_THUMBNAILS = 256
"""Queried samples beyond this many get no image in the table (the rows are all kept)."""


def image_array(x: Any) -> np.ndarray | None:
    """An image tensor ``(C, H, W)`` with ``C`` in {1, 3} as ``uint8`` ``(H, W)`` or ``(H, W, 3)``, else ``None``.

    Each image is min-max scaled on its own: inputs are usually normalised, so their range is unknown.
    """
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[0] not in (1, 3) or min(x.shape[1:]) < 2:
        return None
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        return None
    x = x.detach().to("cpu", torch.float64)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if math.isfinite(lo) and math.isfinite(hi) and hi > lo else torch.zeros_like(x)
    array = (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


ROW_METRICS = ("round", "labeled", "pool", "test_acc", "score_seconds", "epochs", "train_loss", "train_acc",
               "test_metric", "train_metric")
"""The columns of a round's row that every logger gets as ``al/<column>``."""


def log_round(trainer: Trainer, history: Sequence[dict[str, Any]], row: dict[str, Any], extra: dict[str, float],
              query: Query | None, pool_scores: Tensor | None, datamodule: ActiveLearningDataModule) -> None:
    """Log a finished round: its row and ``extra`` as scalars to every logger, then the media (W&B only)."""
    metrics = {**{f"al/{k}": row[k] for k in ROW_METRICS}, **extra}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
    log_round_media(trainer, [*history, row], query, pool_scores, datamodule)


def log_round_media(trainer: Trainer, history: Sequence[dict[str, Any]], query: Query | None,
                    pool_scores: Tensor | None, datamodule: ActiveLearningDataModule) -> None:
    """Log the learning curve so far, and for a query the pool-score histogram and the queried samples.

    Does nothing without a ``WandbLogger`` or off rank zero; ``pool_scores`` is only read with a ``query``.
    """
    loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
    if not loggers or not trainer.is_global_zero:
        return
    import wandb

    media: dict[str, Any] = {}
    name = f"test_{history[-1].get('metric') or 'acc'}" if history else "test_acc"
    curve = [[int(r["round"]), int(r["labeled"]), float(r["test_metric"])] for r in history
             if math.isfinite(float(r["test_metric"]))]
    if curve:
        table = wandb.Table(columns=["round", "labeled", name], data=curve)
        media["al/learning_curve"] = wandb.plot.line(table, "labeled", name, title=f"{name} vs labeled")
    if query is not None:
        if pool_scores is not None:
            finite = pool_scores.detach().double().cpu()
            finite = finite[torch.isfinite(finite)]
            if finite.numel():
                media["al/pool_scores"] = wandb.Histogram(finite.tolist(), num_bins=64)
        media["al/queried"] = queried_table(trainer, query, datamodule)
    for logger in loggers:
        logger.log_metrics(media, step=trainer.global_step)


def queried_table(trainer: Trainer, query: Query, datamodule: ActiveLearningDataModule) -> Any:
    """A ``wandb.Table`` with round, index, score, pseudo label, true label (and a thumbnail for image data).

    Pseudo labels come from the strategy when it gave them, else from the task's pseudo targets of the model in eval
    mode (at the real tokens only for token classification).
    """
    import wandb

    model = trainer.lightning_module
    task = datamodule.task
    pseudo = list(query.pseudo_labels) if query.pseudo_labels is not None else None
    predicted: list[Tensor] = []
    targets: list[Tensor | None] = []
    images: list[Any] = []
    loader = datamodule.eval_loader(Subset(datamodule.splits.pool_eval, query.indices))
    with evaluation(model), torch.no_grad():
        for batch in loader:
            x, y = split_batch(batch, datamodule.label_key)
            n = batch_size(x)
            targets += list(y.cpu()) if y is not None else [None] * n
            if pseudo is None:
                inputs = to_model(x, model)
                predicted += list(task.batch_pseudo_targets(forward_logits(model, inputs, task), inputs).cpu())
            for i in range(n):
                sample = x[i] if isinstance(x, Tensor) else None
                array = image_array(sample) if sample is not None and len(images) < MAX_THUMBNAILS else None
                images.append(wandb.Image(array) if array is not None else None)
    pseudo = pseudo if pseudo is not None else predicted
    scores = query.scores.tolist() if query.scores is not None else [None] * len(query.indices)
    columns: list[Any] = ["round", "index", "score", "pseudo_label", "true_label"]
    rows = [[query.round, int(i), s, task.encode_label(p), None if y is None else task.encode_label(y)]
            for i, s, p, y in zip(query.indices, scores, pseudo, targets)]
    if any(image is not None for image in images):
        columns.append("image")
        rows = [row + [image] for row, image in zip(rows, images)]
    return wandb.Table(columns=columns, data=rows)
