"""``ActiveLearningLoop``: train until convergence, query the pool, grow the labeled set, repeat."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.errors import ConfigError, check_choice, check_fraction
from lightning_dynamical.errors import check_positive_int as check_positive
from lightning_dynamical.loop.batch_check import check_batches
from lightning_dynamical.loop.convergence import Convergence, EpochLoss
from lightning_dynamical.loop.distributed import reduce_sum, refuse_spawned_processes, sync_buffers
from lightning_dynamical.loop.evaluator import Evaluator
from lightning_dynamical.loop.interrupts import announce_interrupt
from lightning_dynamical.loop.labeling import Labeling
from lightning_dynamical.loop.pool_scorer import PoolScorer, Scored
from lightning_dynamical.loop.stopping import StopMode, Stopping, StoppingCriterion
from lightning_dynamical.loop.train_loader import reload_train_dataloader
from lightning_dynamical.oracles.base import DatasetOracle, Oracle
from lightning_dynamical.records import rng
from lightning_dynamical.records.files import save_checkpoint
from lightning_dynamical.records.migrate import migrate_loop_state
from lightning_dynamical.records.rng import RngState
from lightning_dynamical.records.run import RunRecords
from lightning_dynamical.records.weights import clear_optimizers, reinitialise, unresettable
from lightning_dynamical.reporting import wandb_runs
from lightning_dynamical.reporting.charts import log_round
from lightning_dynamical.reporting.console import say
from lightning_dynamical.reporting.summary import report, round_line
from lightning_dynamical.strategies.base import NonFiniteScoresError, Strategy
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.tasks.batches import batch_inputs, batch_size

Reset = Literal["none", "init", "optimizer"]


class ActiveLearningLoop(Callback):
    """Runs ``rounds`` active-learning rounds inside one ``trainer.fit``.

    Each round trains on the labeled split until it has converged
    (:class:`~lightning_dynamical.loop.convergence.Convergence`: the labeled set fit for ``fit_epochs`` epochs
    and the smoothed loss at ``loss_target`` or on a relative plateau; a round capped by
    ``max_epochs_per_round`` first warns), evaluates test accuracy, scores the unlabeled pool with
    ``strategy``, asks the ``oracle`` to label the top ``query_size`` samples, reloads the train loader and
    trains again. The trainer is stopped after the last round's training. Needs an :class:`ActiveLearningDataModule`.

    Args:
        strategy: query strategy (default ``DynamicAL()``).
        query_size: samples labeled per round (b).
        rounds: query rounds (R); ``rounds + 1`` training phases, the first on the initial set.
        patience: epochs without a counted improvement of the smoothed train loss that make a plateau.
        min_delta: minimum absolute improvement of the smoothed train loss (0: relative only).
        rel_delta: minimum improvement relative to the best smoothed train loss.
        smoothing: epochs averaged into the smoothed train loss (see :class:`Convergence`).
        train_acc_threshold: labeled-set accuracy that must hold for ``fit_epochs`` epochs before a round may
            end (``None``: no fit test).
        fit_epochs: consecutive epochs ``train_acc_threshold`` must hold.
        loss_target: a smoothed train loss at or below this counts as settled (``None``: plateau only).
        max_epochs_per_round: cap on epochs per round.
        min_epochs_per_round: floor on epochs per round.
        pool_subset: score only a seeded random subset of this many pool samples per round.
        reset: ``"none"`` keeps weights and optimizer state between rounds (warm start, the paper's);
            ``"optimizer"`` keeps the weights with a fresh optimizer state each round (the authors' code re-creates
            Adam after every query); ``"init"`` re-initialises weights (seeded) and clears optimizer state.
        seed: seeds pool subsets and re-initialisation; same seed, same selections.
        oracle: who labels the queries (default: the data set's own labels).
        dirpath: where ``al_rounds.csv``, ``al_state.json`` and round checkpoints go (default: the
            trainer's log directory).
        save_round_checkpoints: save ``al_round_<k>.ckpt`` after each query (every rank calls
            ``trainer.save_checkpoint``).
        resume_from_state: an ``al_state.json`` to rebuild the labeled split from at setup; without a
            ``ckpt_path``, the model starts from the weights of the checkpoint it names.
        log_approximation_ratio: also record the query regime (Eq. 14 and the medians of ``||g_u||^2`` and
            ``g_u . G_S`` over the queried batch) for strategies other than dynamicAL, which always records it.
        stop: stopping criteria (:mod:`lightning_dynamical.loop.stopping`), asked every round; when one fires the
            run ends after that round's training, without labeling its query.
        stop_mode: ``"stop"``, or ``"record"`` to only record in ``al_rounds.csv`` when criteria fire.
        verbose: print a line per round.

    Raises:
        ConfigError: an argument out of range (at construction), ``query_size`` larger than the pool, a spawning
            DDP launcher (at setup), or data sets whose batches differ in structure (at fit start, before any
            epoch).
        TypeError: ``strategy`` is not a :class:`~lightning_dynamical.Strategy`, or the trainer's DataModule is
            not an :class:`ActiveLearningDataModule`.
        NonFiniteScoresError: the strategy scored pool samples NaN or inf (names up to ten of them; the round's
            weights are saved first, so a repaired pool resumes without retraining).

    Example::

        dm = ActiveLearningDataModule(pool, test=test, initial_size=100)
        loop = ActiveLearningLoop(DynamicAL(gamma=2.0), query_size=50, rounds=4)
        trainer = Trainer(max_epochs=-1, callbacks=[loop])
        trainer.fit(Classifier(net, num_classes=10), datamodule=dm)
        print(dm.labeled_indices, loop.history[-1]["test_acc"], loop.final_checkpoint)
    """

    def __init__(self, strategy: Strategy | None = None, query_size: int = 500, rounds: int = 5, patience: int = 5,
                 min_delta: float = 0.0, train_acc_threshold: float | None = 0.99, max_epochs_per_round: int = 100,
                 min_epochs_per_round: int = 1, pool_subset: int | None = None, reset: Reset = "none", seed: int = 0,
                 oracle: Oracle | None = None, dirpath: str | None = None, save_round_checkpoints: bool = True,
                 resume_from_state: str | None = None, log_approximation_ratio: bool = False,
                 stop: StoppingCriterion | list[StoppingCriterion] | None = None, stop_mode: StopMode = "stop",
                 smoothing: int = 5, rel_delta: float = 0.05, fit_epochs: int = 5, loss_target: float | None = 0.01,
                 verbose: bool = True) -> None:
        check_positive("query_size", query_size)
        check_positive("rounds", rounds)
        check_fraction("train_acc_threshold", train_acc_threshold)
        check_choice("reset", reset, ("none", "init", "optimizer"))
        if strategy is not None and not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a lightning_dynamical Strategy, got {type(strategy).__name__}")
        self.strategy = strategy if strategy is not None else DynamicAL()
        self.query_size, self.rounds, self.reset, self.seed = query_size, rounds, reset, seed
        self.save_round_checkpoints, self.verbose = save_round_checkpoints, verbose
        self.resume_from_state = resume_from_state
        self.round, self.finished = 0, False
        self.rescore = False  # resumed from al_rescore_round_<k>.ckpt: score round k again at fit start
        self.history: list[dict[str, Any]] = []
        # The parts, each with its own state (each validates its own arguments):
        self.convergence = Convergence(patience, min_delta, train_acc_threshold, max_epochs_per_round,
                                       min_epochs_per_round, smoothing, rel_delta, fit_epochs, loss_target)
        self.scorer = PoolScorer(self.strategy, pool_subset, seed, query_size, log_approximation_ratio)
        self.stopping = Stopping(stop, stop_mode)
        self.evaluator = Evaluator()
        self.records = RunRecords(dirpath)
        self.labeling = Labeling(oracle if oracle is not None else DatasetOracle(), self.records)
        self.rng = RngState()
        self.loss = EpochLoss()
        self.epoch_loss: float | None = None  # the epoch's, taken at its last batch and used at its end
        self._reduce: Callable[[Tensor], Tensor] | None = None
        self._resumed_dirpath: str | None = None  # the records folder of the checkpoint resumed from
        self._final_checkpoint: str | None = None

    @property
    def datamodule(self) -> ActiveLearningDataModule:
        return self._datamodule

    @property
    def pending(self) -> dict[str, Any] | None:
        """The paused round's query (``None`` unless labels are pending)."""
        return self.labeling.pending.state

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        refuse_spawned_processes(trainer)
        for name, value in (("min_epochs", trainer.fit_loop.min_epochs), ("min_steps", trainer.fit_loop.min_steps)):
            if value is not None and value > 1:
                raise ConfigError(f"Trainer({name}={value}) would keep training after the loop's last round (Lightning "
                                  f"does not stop before it), on the final labeled set and past al_final.ckpt; leave "
                                  f"it unset (ActiveLearningLoop(min_epochs_per_round=...) sets a floor per round)")
        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, ActiveLearningDataModule):
            raise TypeError("ActiveLearningLoop needs an ActiveLearningDataModule passed to trainer.fit(datamodule=...)"
                            f"; got {type(dm).__name__}")
        if self.reset == "init" and (kept := unresettable(pl_module)):
            raise ConfigError(f"reset='init' re-initialises parameters by their modules' reset_parameters(), which "
                              f"these have none of and would keep trained: {', '.join(kept[:5])}"
                              f"{f' and {len(kept) - 5} more' if len(kept) > 5 else ''}; give their module a "
                              "reset_parameters() or use reset='optimizer' or 'none'")
        self._datamodule = dm
        self.labeling.oracle.check_task(dm.task)
        dm.setup("fit")
        self.labeling.oracle.check_datamodule(dm)
        if self.resume_from_state:
            self.load_state_dict(self.records.resume_from(dm, self.resume_from_state))
        if self.query_size > dm.num_unlabeled and not self.finished and self.round == 0:
            raise ConfigError(f"query_size={self.query_size} is larger than the unlabeled pool of {dm.num_unlabeled}")
        self.records.setup(trainer)
        self.scorer.setup(trainer, dm)
        self.stopping.setup(self)
        self.convergence.check_max_epochs(trainer.max_epochs, self.rounds)
        self._reduce = functools.partial(reduce_sum, trainer)
        _warn_monitored_checkpoints(trainer)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.finished:  # fit again, or resumed from al_final.ckpt: nothing is left to train for
            trainer.should_stop = True
            trainer.fit_loop.min_epochs = trainer.fit_loop.epoch_loop.min_steps = None  # Lightning trains up to them
            say(f"[active learning] this loop has finished ({len(self.history)} round(s) recorded, "
                f"{self.datamodule.num_labeled} labeled samples): nothing to train. Test the final model with "
                "trainer.test(ckpt_path=...) on al_final.ckpt; for more rounds, start a new ActiveLearningLoop with "
                "resume_from_state pointing at this run's al_state.json")
            return
        dm = self.datamodule
        self.loss.reset()
        check_batches(dm)
        self.evaluator.check_model(pl_module, dm)
        folder = self.records.continue_in(self._resumed_dirpath, trainer.ckpt_path, self.round, len(self.history))
        if folder is not None:
            say(f"[active learning] resuming the run whose records are in {folder}: its rounds continue there")
        self.records.start_weights(pl_module, trainer.ckpt_path, self.resume_from_state, self.round)
        self.rng.restore()
        self.records.cut_back(self.round)
        if (collected := self.labeling.collect(dm, self.round)) is not None:
            query, row, metrics = collected
            self._log(trainer, row, metrics, Scored(query, None, 0.0))
            self._advance(trainer, pl_module, row, last=False)
        elif self.rescore:  # the round trained before its pool scores were not finite: score it again, no training
            self.rescore = False
            self._end_round(trainer, pl_module)
        self._write()

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # automatic optimization hands us loss / accumulate_grad_batches (what it backpropagates); manual, the loss
        accumulate = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        self.loss.update(outputs, batch_size(batch_inputs(batch, self.datamodule.label_key)), accumulate)
        if batch_idx == trainer.num_training_batches - 1:  # before the epoch-end validation and its checkpoints
            self.epoch_loss = self.loss.compute(self._reduce, pl_module.device)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.loss.reset()
        self.epoch_loss = None

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.finished:
            return
        loss, self.epoch_loss = self.epoch_loss, None
        if loss is None:  # its last batch did not run: a loader without a length, a skipped rest, or the fit ends
            if math.isfinite(trainer.num_training_batches) and _fit_ending(trainer):  # max_steps, a timer, a stop
                return self.loss.reset()
            loss = self.loss.compute(self._reduce, pl_module.device)
        sync_buffers(trainer, pl_module)
        dm, accuracy = self.datamodule, None
        if self.convergence.accuracy_threshold is not None:
            accuracy = self.evaluator.accuracy(trainer, pl_module, dm, dm.labeled_dataset(evaluation=True))
        if self.convergence.update(loss, accuracy):
            self._end_round(trainer, pl_module)

    def _end_round(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Evaluate, query, label; roll the split back if anything fails before the round is recorded."""
        dm = self.datamodule
        row = self.evaluator.round_row(trainer, pl_module, dm, self.round, self.convergence)
        snapshot = dm.state_dict()
        before = copy.deepcopy({"stopping": self.stopping.state_dict(), "strategy": self.strategy.state_dict()})
        try:  # scored stays None in the last round: nothing is queried
            scored, stop = None, self.stopping.check(trainer, pl_module, self, row, "train")
            if not stop and self.round < self.rounds and dm.num_unlabeled > 0:
                scored = self.scorer.query(trainer, pl_module, dm, self.round, self.query_size)
                row.update(scored.row())
                if self.stopping.check(trainer, pl_module, self, row, "query"):
                    scored = None
            metrics = scored.metrics() if scored is not None else {}
            if scored is not None:
                reason = self.labeling.label(dm, scored.query, row, metrics)
                if reason is not None:  # labels come later: save a checkpoint and stop; resuming collects them
                    path = self.records.save_pending(trainer, self.round)
                    self._write()
                    trainer.should_stop = True
                    return self.labeling.pending.announce(self.round, reason, path)
            self._log(trainer, row, metrics, scored)
        except NonFiniteScoresError as err:
            dm.load_state_dict(snapshot)
            raise self._rescore_later(trainer, err, before) from err
        except BaseException:
            dm.load_state_dict(snapshot)
            raise
        self._advance(trainer, pl_module, row, last=scored is None)

    def _rescore_later(self, trainer: Trainer, err: NonFiniteScoresError,
                       before: dict[str, Any]) -> NonFiniteScoresError:
        """Checkpoint the round's trained weights, with the loop as the round ended and marked to score it again on
        resume; the error to raise, naming the checkpoint."""
        self.stopping.load_state_dict(before["stopping"])
        self.strategy.load_state_dict(before["strategy"])
        self.rescore = True
        try:
            path = self.records.save_rescore(trainer, self.round)
        finally:
            self.rescore = False
        return NonFiniteScoresError(f"{err}; the round's trained weights are saved in {path}: repair those samples "
                                    f"in place and resume with ckpt_path={path!r} to score round {self.round} again "
                                    "without retraining", err.positions, err.indices, path)

    def _log(self, trainer: Trainer, row: dict[str, Any], metrics: dict[str, float], scored: Scored | None) -> None:
        query, pool_scores = (scored.query, scored.pool_scores) if scored is not None else (None, None)
        log_round(trainer, self.history, row, {**self.stopping.metrics(), **metrics}, query, pool_scores,
                  self.datamodule)

    def _advance(self, trainer: Trainer, pl_module: LightningModule, row: dict[str, Any], last: bool) -> None:
        """Record a finished round; then stop (last round) or start the next one."""
        self.history.append(row)
        if self.verbose:
            say(round_line(row, self.convergence.reason))
        if last:
            if (line := self.stopping.end_line(row, self.datamodule.num_unlabeled, self.rounds)) is not None:
                say(line)
            self.finished = trainer.should_stop = True
            self._write()
            if self.save_round_checkpoints:
                self._final_checkpoint = self.records.final_checkpoint()
                save_checkpoint(trainer, self._final_checkpoint)
            return None
        self.round += 1
        self.convergence.reset()
        if self.reset == "init":
            reinitialise(trainer, pl_module, rng.derive(self.seed, self.round))
        elif self.reset == "optimizer":
            clear_optimizers(trainer)
        reload_train_dataloader(trainer)
        self.records.weights = self.records.round_checkpoint(self.round - 1) if self.save_round_checkpoints else None
        self._write()
        if self.records.weights is not None:
            save_checkpoint(trainer, self.records.weights)

    def _write(self) -> None:
        """``al_rounds.csv`` and ``al_state.json`` (the paused round's row too, for ``label import``)."""
        fields = {"strategy": repr(self.strategy), "seed": self.seed, "stopping": self.stopping.state_dict()}
        if self.pending is not None:
            fields["pending_row"] = self.pending["row"]
        self.records.write(self.datamodule, self.round, self.history, fields)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.finished and self.pending is None:
            where = (f"in round {self.round} (epoch {self.convergence.epochs} of the round)" if self.convergence.epochs
                     else f"at the start of round {self.round}")
            say(f"[active learning] {_who_stopped(trainer)} ended the fit {where} before active learning finished: "
                f"{len(self.history)} round(s) recorded, {self.datamodule.num_labeled} labeled samples; the records "
                "and checkpoints hold everything up to the last finished round. The loop ends rounds by its own "
                "convergence rule; a callback that stops training ends the whole run")
        if self.verbose and self.history:
            report(trainer, pl_module, self.records.dirpath, self.history, self.save_round_checkpoints,
                   self.final_checkpoint)

    @property
    def final_checkpoint(self) -> str | None:
        """``al_final.ckpt``: the weights at the end of the last round (``None`` until written, or when
        ``save_round_checkpoints=False``). Test the final model with ``trainer.test(ckpt_path=...)`` on it, or
        with ``trainer.test(model, datamodule=dm)`` right after ``fit``."""
        return self._final_checkpoint

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """On Ctrl-C or SIGTERM, name the last round checkpoint and the command that resumes from it."""
        saved = self.records.saved_round(self.round - 1) if self.save_round_checkpoints else None
        announce_interrupt(trainer, pl_module, exception, self.round, saved)

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[wandb_runs.CHECKPOINT_KEY] = wandb_runs.identity(trainer)

    def _parts(self) -> dict[str, Any]:
        """The loop's own parts whose state goes into checkpoints, by key (each loads ``None`` as "none saved")."""
        return {"convergence": self.convergence, "rng": self.rng, "pending": self.labeling.pending,
                "stopping": self.stopping}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "finished": self.finished, "rescore": self.rescore,
                "epoch_loss": self.epoch_loss, "dirpath": self.records.dirpath,
                "history": [dict(r) for r in self.history],
                "strategy": self.strategy.state_dict(), **{k: part.state_dict() for k, part in self._parts().items()}}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = migrate_loop_state(state_dict)  # checkpoints of earlier versions
        self.round, self.finished = int(state_dict["round"]), bool(state_dict["finished"])
        self.rescore = bool(state_dict.get("rescore", False))
        loss = state_dict.get("epoch_loss")  # an epoch whose batches ran, saved before its end (at validation)
        self.epoch_loss = None if loss is None else float(loss)
        self._resumed_dirpath = state_dict.get("dirpath")
        self.history = [dict(r) for r in state_dict["history"]]
        for key, part in self._parts().items():
            part.load_state_dict(state_dict.get(key))
        if state_dict.get("strategy") is not None:
            self.strategy.load_state_dict(state_dict["strategy"])


def _warn_monitored_checkpoints(trainer: Trainer) -> None:
    """A ``ModelCheckpoint`` that monitors a metric compares models trained on different labeled sets."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor is not None:
            rank_zero_warn(f"ModelCheckpoint(monitor={callback.monitor!r}) ranks checkpoints across active-learning "
                           "rounds, whose labeled sets differ: its 'best' may come from an earlier round. The final "
                           "model is ActiveLearningLoop.final_checkpoint (al_final.ckpt): "
                           "trainer.test(ckpt_path=loop.final_checkpoint)")


def _fit_ending(trainer: Trainer) -> bool:
    """Whether the fit ends after this epoch: a stop was asked for (a timer, EarlyStopping) or ``max_steps`` is
    reached."""
    return trainer.should_stop or 0 <= trainer.max_steps <= trainer.global_step


def _who_stopped(trainer: Trainer) -> str:
    """A name for what set ``trainer.should_stop`` (or ended the fit) other than the loop."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, EarlyStopping) and (callback.wait_count >= callback.patience
                                                    or getattr(callback, "stopping_reason_message", None)):
            return f"EarlyStopping(monitor={callback.monitor!r})"
        remaining = callback.time_remaining() if isinstance(callback, Timer) else None
        if remaining is not None and remaining <= 0:
            return "Timer (max_time)"
    if fast := getattr(trainer, "fast_dev_run", False):
        return f"Trainer(fast_dev_run={fast})"
    if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch:
        return f"Trainer(max_epochs={trainer.max_epochs})"
    if 0 <= trainer.max_steps <= trainer.global_step:
        return f"Trainer(max_steps={trainer.max_steps})"
    return "another callback or the LightningModule (trainer.should_stop)"
