"""Checks that need the data but no started run: a bad start fails before any logger or callback writes a file."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, Trainer

from lightning_dynamical.data.datamodule import ActiveLearningDataModule, LabelError
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop.callback import ActiveLearningLoop
from lightning_dynamical.records import files as records


def check_fit(trainer: Trainer, datamodule: LightningDataModule | None, ckpt_path: str | None) -> None:
    """Refuse, with a :class:`ConfigError`, what ``trainer.fit`` would refuse only after its loggers started.

    Builds the data (``prepare_data`` on local rank 0, then the splits), so a missing data root, a resume state
    that does not fit the pool or a query larger than the pool is reported first; the fit reuses the splits.
    """
    if ckpt_path and not records.exists(ckpt_path):
        raise ConfigError(f"ckpt_path {ckpt_path!r} does not exist")
    loops = [c for c in getattr(trainer, "callbacks", []) if isinstance(c, ActiveLearningLoop)]
    if not loops:
        return
    if not isinstance(datamodule, ActiveLearningDataModule):
        raise ConfigError("ActiveLearningLoop needs data: an ActiveLearningDataModule (e.g. "
                          f"lightning_dynamical.data.DigitsDataModule); got {type(datamodule).__name__}")
    if trainer.local_rank == 0:
        datamodule.prepare_data()
    datamodule.splits  # noqa: B018 - builds the data sets now, so a missing data root fails here
    for loop in loops:
        if loop.resume_from_state:
            _check_state_file(datamodule, loop.resume_from_state)
        elif not ckpt_path and loop.query_size > datamodule.num_unlabeled:
            raise ConfigError(f"query_size={loop.query_size} is larger than the unlabeled pool of "
                              f"{datamodule.num_unlabeled}")


def _check_state_file(datamodule: ActiveLearningDataModule, path: str) -> None:
    state = records.read_state(path)
    try:
        datamodule.check_state({"dataset_size": state["dataset_size"], "labeled": state["labeled"]})
    except LabelError as err:
        raise ConfigError(f"state file {path} does not fit this pool: {err}") from err
