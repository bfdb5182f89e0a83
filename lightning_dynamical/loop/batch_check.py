"""Fit-start check of the data sets' batches: one structure everywhere, and targets where the loop reads them.

A pool item shaped unlike the labeled ones (a dict among tuples, an inputs-only ``pool_eval``) would otherwise fail
only after the first round's training, when the pool is scored or the labeled set evaluated through it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data import Dataset, Subset

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.data.splits import dataset_size
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.tasks.batches import batch_targets, structure
from lightning_dynamical.tasks.names import TASKS

PROBE = 2
"""Samples in each checked batch."""


def check_batches(dm: ActiveLearningDataModule) -> None:
    """Read one small batch of each data set the run uses and compare it with a labeled batch of ``pool``.

    Raises a one-line :class:`ConfigError` naming the data set argument (``pool``, ``pool_eval``, ``val``,
    ``test``) whose batches differ in structure (tensor, tuple/list or dict; the dict keys; the number of
    positional inputs), lack a target where one is needed, or fall outside the batch contract.
    """
    splits = dm.splits
    separate = splits.pool_eval is not splits.pool
    checks: list[tuple[str, str, Dataset, str | None]] = [
        ("pool", "its labeled samples", dm.labeled_dataset(), "they are trained on")]
    if separate:
        checks.append(("pool_eval", "its labeled samples", dm.labeled_dataset(evaluation=True),
                       "the labeled set is evaluated and scored through pool_eval"))
    if dm.num_unlabeled:
        checks.append(("pool_eval" if separate else "pool", "its unlabeled samples",
                       dm.pool_dataset(range(min(PROBE, dm.num_unlabeled))), None))
    for name, use in (("val", "validation measures accuracy on it"), ("test", "each round measures test accuracy")):
        if getattr(splits, name) is not None:
            checks.append((name, "its samples", getattr(splits, name), use))
    reference = None
    for name, what, dataset, needs in checks:
        if dataset_size(dataset) == 0:
            continue
        form, target = _structure(dm, name, dataset)
        if needs and target is None:
            raise ConfigError(f"{name}: {what} yield {form} without a target, but {needs}; give its items as "
                              f"(inputs, target, ...), or as dicts with the target under {dm.label_key!r}")
        if needs and target is not None and (problem := dm.task.target_problem(target)) is not None:
            dtype = str(target.dtype).replace("torch.", "")
            raise ConfigError(f"{name}: {what} have {dtype} targets of shape {tuple(target.shape)}, but the "
                              f"{dm.task.name} task needs {problem}. Name the task on the data module "
                              f"(ActiveLearningDataModule(task=...): {', '.join(map(repr, TASKS))}) for other targets")
        if reference is None:
            reference = form
        elif form != reference:
            raise ConfigError(f"{name}: {what} yield {form}, but the labeled samples of pool yield {reference}; "
                              "every data set must give the model its inputs the same way")


def _structure(dm: ActiveLearningDataModule, name: str, dataset: Any) -> tuple[str, Tensor | None]:
    """The structure of the first batch of up to :data:`PROBE` samples of ``dataset``, as the loop loads it, and
    its target (``None`` without one)."""
    probe = Subset(dataset, range(min(PROBE, dataset_size(dataset))))
    batch = next(iter(dm.eval_loader(probe)))
    try:
        form, has_target = structure(batch, dm.label_key)
        return form, batch_targets(batch, dm.label_key) if has_target else None
    except TypeError as err:
        raise ConfigError(f"{name}: {err}") from err
