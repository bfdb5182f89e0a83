"""The run's files: where they go, ``al_rounds.csv``/``al_state.json``/``al_queries.csv`` and checkpoints.

Files are written by rank zero only, atomically (:mod:`lightning_dynamical.records.files`); checkpoints are saved
by every rank (``trainer.save_checkpoint`` is collective).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from os import PathLike
from typing import Any

from lightning.pytorch import LightningModule, Trainer

from lightning_dynamical.data.datamodule import ActiveLearningDataModule, LabelError
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.records import files as records
from lightning_dynamical.records import queries
from lightning_dynamical.records.queries import Query
from lightning_dynamical.records.weights import reference as weights_reference
from lightning_dynamical.records.weights import resolve, restore_weights

FINAL_CHECKPOINT = "al_final.ckpt"


class RunRecords:
    """Writes one run's records into ``dirpath`` (default: the trainer's log directory) and remembers the
    checkpoint holding the weights to continue from (``weights``, named in ``al_state.json``)."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.option = dirpath
        self.dirpath = ""
        self.weights: str | None = None
        self.weights_in_state: str | None = None
        self._writer = True
        self._broadcast: Callable[[Any], Any] = _unchanged  # one process until setup (a function: spawn pickles it)

    @property
    def ready(self) -> bool:
        return bool(self.dirpath)

    def setup(self, trainer: Trainer) -> None:
        """Agree on the folder over ranks and remove temporary files a killed run left there."""
        self._broadcast = functools.partial(trainer.strategy.broadcast, src=0)
        self.dirpath = self._broadcast(str(self.option or trainer.log_dir or trainer.default_root_dir))
        self._writer = trainer.is_global_zero
        if self._writer:
            records.remove_stale_temps(self.dirpath)

    def continue_in(self, dirpath: str | None, ckpt_path: str | PathLike[str] | None, round: int,
                    rounds_recorded: int) -> str | None:
        """On resuming from a checkpoint without an explicit ``dirpath``: keep writing where the checkpoint's run wrote
        (``dirpath``, from its state) rather than in this trainer's new log folder, so that one folder holds every
        round's records; returns the folder when it changed. Only when the checkpoint lies in that folder and the
        folder's ``al_state.json`` is at the checkpoint's round with as many rounds recorded: a resume from an
        earlier round (a branch) or from a copy of the folder writes a folder of its own, leaving that run's
        records as they are."""
        if self.option is not None or not dirpath or dirpath == self.dirpath or ckpt_path is None \
                or not _inside(str(ckpt_path), dirpath):
            return None
        if not self._broadcast(_at_round(records.join(dirpath, "al_state.json"), round, rounds_recorded)):
            return None  # rank 0's view, for all
        self.dirpath = dirpath
        if self._writer:
            records.remove_stale_temps(dirpath)
        return dirpath

    def resume_from(self, dm: ActiveLearningDataModule, path: str) -> dict[str, Any]:
        """Load the split of the ``al_state.json`` at ``path`` into ``dm`` (see :func:`load_split`), remember the
        checkpoint it names for :meth:`start_weights`, and return what it holds of the loop's ``state_dict``:
        the round to run, the rounds finished before it and the stopping criteria's state."""
        state = load_split(dm, path)
        self.weights_in_state = state.get("weights")
        round = int(state["round"])
        return {"round": round, "finished": False, "stopping": state.get("stopping"),
                "history": [row for row in state.get("history", []) if int(row["round"]) < round]}

    def start_weights(self, model: LightningModule, ckpt_path: str | PathLike[str] | None, state_path: str | None,
                      round: int) -> None:
        """Note the checkpoint the run continues from: ``ckpt_path``, else (loading them into ``model``) the
        weights named by the ``al_state.json`` at ``state_path``."""
        if ckpt_path is not None:
            self.weights = str(ckpt_path)
        elif state_path and restore_weights(model, self.weights_in_state, state_path, round):
            self.weights = resolve(self.weights_in_state, state_path)

    def write(self, dm: ActiveLearningDataModule, round: int, history: list[dict[str, Any]],
              fields: dict[str, Any]) -> None:
        """Rewrite ``al_rounds.csv`` and ``al_state.json``: the split, the rows, ``fields`` and the weights."""
        if not self._writer:
            return
        split = dm.state_dict()
        records.write_rounds(self.dirpath, history)
        records.write_state(self.dirpath, {
            "round": round, "dataset_size": split["dataset_size"], "labeled": split["labeled"],
            "given_labels": split["given_labels"], "history": history, **fields,
            "weights": weights_reference(self.weights, self.dirpath)})

    def write_query(self, query: Query, dm: ActiveLearningDataModule, labeled_by: str) -> None:
        """Put the query's rows into ``al_queries.csv``, labels as the labeled set now serves them."""
        if self._writer:
            queries.write_round(self.dirpath, query.round, queries.query_rows(query, dm, labeled_by))

    def cut_back(self, round: int) -> None:
        """Drop ``al_queries.csv`` rows of ``round`` and later: a resumed run redoes them."""
        if self._writer:
            queries.cut_back(self.dirpath, round)

    def round_checkpoint(self, round: int) -> str:
        """Where ``al_round_<round>.ckpt`` goes."""
        return records.round_checkpoint(self.dirpath, round)

    def final_checkpoint(self) -> str:
        """Where ``al_final.ckpt`` (the weights at the end of the last round) goes."""
        return records.join(self.dirpath, FINAL_CHECKPOINT)

    def save_pending(self, trainer: Trainer, round: int) -> str:
        """Save the checkpoint a paused run resumes from (every rank); its path."""
        self.weights = records.join(self.dirpath, f"al_pending_round_{round}.ckpt")
        records.save_checkpoint(trainer, self.weights)
        return self.weights

    def save_rescore(self, trainer: Trainer, round: int) -> str:
        """Save the checkpoint a run whose pool scores were not finite resumes from to score ``round`` again
        without retraining (every rank); its path. The weights named in ``al_state.json`` are left as they were."""
        path = records.join(self.dirpath, f"al_rescore_round_{round}.ckpt")
        records.save_checkpoint(trainer, path)
        return path

    def saved_round(self, round: int) -> str | None:
        """``al_round_<round>.ckpt`` if it exists."""
        if not self.ready or round < 0:
            return None
        path = records.round_checkpoint(self.dirpath, round)
        return path if records.exists(path) else None


def load_split(dm: ActiveLearningDataModule, path: str) -> dict[str, Any]:
    """Put the labeled split of the ``al_state.json`` at ``path`` into ``dm`` and return the state.

    Raises (with ``dm`` unchanged) when the file is not a valid state, does not fit this pool, or has labels pending
    (resuming would train that round again and drop its row).
    """
    state = records.read_state(path)
    if (pending := state.get("pending_row")) is not None:
        k = int(pending["round"])
        raise ConfigError(f"{path} has labels pending for round {k}: import them first (lightning-dynamical "
                          f"label import <its queries_round_{k}.csv> --state {path}), or resume from "
                          f"al_pending_round_{k}.ckpt with ckpt_path; nothing was changed")
    snapshot = dm.state_dict()
    try:
        dm.load_state_dict({**snapshot, "labeled": state["labeled"], "dataset_size": state["dataset_size"],
                            "given_labels": state.get("given_labels", [])})
    except LabelError as err:
        raise LabelError(f"state file {path} does not fit this pool: {err}") from err
    return state


def _at_round(state_path: str, round: int, rounds_recorded: int) -> bool:
    """Whether the ``al_state.json`` at ``state_path`` exists and is at ``round`` with ``rounds_recorded`` rows."""
    try:
        state = records.read_state(state_path) if records.exists(state_path) else None
    except ConfigError:  # not a state this version reads: not the run to continue
        return False
    return state is not None and int(state["round"]) == round and len(state.get("history", [])) == rounds_recorded


def _unchanged(value: Any) -> Any:
    return value


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies in ``folder`` (local paths compared resolved: relative, ``./`` and symlinks alike)."""
    if "://" not in path and "://" not in folder:
        path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path.startswith(folder.rstrip("/") + "/")
