"""``ActiveLearningLoop``: train until convergence, query the pool, grow the labeled set, repeat."""

from __future__ import annotations

import math
import random
import time
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_dynamical import queries, records, wandb_link
from lightning_dynamical.batches import batch_inputs, batch_size, batch_targets, forward_logits, to_model
from lightning_dynamical.console import end_progress_bar, say
from lightning_dynamical.convergence import Convergence, near_chance_warning
from lightning_dynamical.distributed import check_agreement, gather_shards, reduce_sum, shard, sync_buffers
from lightning_dynamical.errors import (
    ConfigError,
    check_choice,
    check_fraction,
    check_int_between,
    check_non_negative,
    check_positive_int,
)
from lightning_dynamical.interrupts import interrupt_message
from lightning_dynamical.oracle import DatasetOracle, LabelsPending, Oracle, Query
from lightning_dynamical.pool import ActiveLearningDataModule, LabelError
from lightning_dynamical.reporting import log_round_media
from lightning_dynamical.scoring.common import evaluation
from lightning_dynamical.scoring.diagnostics import approximation_ratio
from lightning_dynamical.stopping import StopMode, Stopping, StoppingCriterion
from lightning_dynamical.strategies.base import NonFiniteScoresError, Strategy, check_finite, top_b
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.inference import probabilities
from lightning_dynamical.summary import report
from lightning_dynamical.weights import reference as weights_reference
from lightning_dynamical.weights import resolve as resolve_weights
from lightning_dynamical.weights import restore_weights

Reset = Literal["none", "init"]


class ActiveLearningLoop(Callback):
    """Runs ``rounds`` active-learning rounds inside one ``trainer.fit``.

    Each round trains on the labeled split until :class:`~lightning_dynamical.convergence.Convergence`
    says so, evaluates test accuracy, scores the unlabeled pool with ``strategy``, asks the ``oracle`` to
    label the top ``query_size`` samples, reloads the train loader and trains again. The trainer is
    stopped after the last round's training. Needs an :class:`ActiveLearningDataModule`.

    Args:
        strategy: query strategy (default ``DynamicAL()``).
        query_size: samples labeled per round (b).
        rounds: query rounds (R); ``rounds + 1`` training phases, the first on the initial set.
        patience: epochs without improvement of the smoothed train loss that end a round.
        min_delta: minimum absolute improvement of the smoothed train loss.
        rel_delta: minimum improvement relative to the best smoothed train loss.
        smoothing: epochs averaged into the smoothed train loss (see :class:`Convergence`).
        train_acc_threshold: also end a round once accuracy on the labeled set reaches this.
        max_epochs_per_round: cap on epochs per round.
        min_epochs_per_round: floor on epochs per round.
        pool_subset: score only a seeded random subset of this many pool samples per round.
        reset: ``"none"`` keeps weights between rounds (warm start, the paper's); ``"init"`` re-initialises
            weights (seeded) and clears optimizer state each round.
        seed: seeds pool subsets and re-initialisation; same seed, same selections.
        oracle: who labels the queries (default: the data set's own labels).
        dirpath: where ``al_rounds.csv``, ``al_state.json`` and round checkpoints go (default: the
            trainer's log directory).
        save_round_checkpoints: save ``al_round_<k>.ckpt`` after each query (every rank calls
            ``trainer.save_checkpoint``).
        resume_from_state: an ``al_state.json`` to rebuild the labeled split from at setup; without a
            ``ckpt_path``, the model starts from the weights of the checkpoint it names.
        log_approximation_ratio: log the paper's Eq. 14 ratio for each queried batch (one extra gradient
            pass over S and the batch).
        stop: stopping criteria (:mod:`lightning_dynamical.stopping`), asked every round; when one fires the
            run ends after that round's training, without labeling its query.
        stop_mode: ``"stop"``, or ``"record"`` to only record in ``al_rounds.csv`` when criteria fire.
        verbose: print a line per round.
    """

    def __init__(
        self,
        strategy: Strategy | None = None,
        query_size: int = 500,
        rounds: int = 5,
        patience: int = 5,
        min_delta: float = 1e-3,
        train_acc_threshold: float | None = None,
        max_epochs_per_round: int = 50,
        min_epochs_per_round: int = 1,
        pool_subset: int | None = None,
        reset: Reset = "none",
        seed: int = 0,
        oracle: Oracle | None = None,
        dirpath: str | None = None,
        save_round_checkpoints: bool = True,
        resume_from_state: str | None = None,
        log_approximation_ratio: bool = False,
        stop: StoppingCriterion | list[StoppingCriterion] | None = None,
        stop_mode: StopMode = "stop",
        smoothing: int = 5,
        rel_delta: float = 1e-3,
        verbose: bool = True,
    ) -> None:
        check_positive_int("query_size", query_size)
        check_positive_int("rounds", rounds)
        check_positive_int("patience", patience)
        check_non_negative("min_delta", min_delta)
        check_fraction("train_acc_threshold", train_acc_threshold)
        check_positive_int("max_epochs_per_round", max_epochs_per_round)
        check_int_between("min_epochs_per_round", min_epochs_per_round, 1, max_epochs_per_round, "max_epochs_per_round")
        if pool_subset is not None and (not isinstance(pool_subset, int) or pool_subset < query_size):
            raise ConfigError(f"pool_subset must be null or an int >= query_size ({query_size}), got {pool_subset!r}")
        check_choice("reset", reset, ("none", "init"))
        if strategy is not None and not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a lightning_dynamical Strategy, got {type(strategy).__name__}")
        self.strategy = strategy if strategy is not None else DynamicAL()
        self.query_size = query_size
        self.rounds = rounds
        self.convergence = Convergence(patience, min_delta, train_acc_threshold, max_epochs_per_round,
                                       min_epochs_per_round, smoothing, rel_delta)
        self.stopping = Stopping(stop, stop_mode)
        self.pool_subset = pool_subset
        self.reset = reset
        self.seed = seed
        self.oracle = oracle if oracle is not None else DatasetOracle()
        self.dirpath = dirpath
        self.save_round_checkpoints = save_round_checkpoints
        self.resume_from_state = resume_from_state
        self.log_approximation_ratio = log_approximation_ratio
        self.verbose = verbose
        self.round = 0
        self.history: list[dict[str, Any]] = []
        self.finished = False
        self._loss = MeanMetric()
        self._rng_to_restore: dict[str, Any] | None = None
        self._warned_small_pool = False
        self._num_classes = 0
        self.pending: dict[str, Any] | None = None
        self._weights: str | None = None
        self._weights_in_state: str | None = None

    # ---- setup -----------------------------------------------------------------------------------------
    @property
    def datamodule(self) -> ActiveLearningDataModule:
        return self._datamodule

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if not isinstance(dm, ActiveLearningDataModule):
            raise TypeError("ActiveLearningLoop needs an ActiveLearningDataModule passed to trainer.fit(datamodule=...)"
                            f"; got {type(dm).__name__}")
        self._datamodule = dm
        self._is_global_zero = trainer.is_global_zero
        dm.setup("fit")
        if self.resume_from_state:
            self._load_records_state(dm, self.resume_from_state)
        if self.query_size > dm.num_unlabeled and not self.finished and self.round == 0:
            raise ConfigError(f"query_size={self.query_size} is larger than the unlabeled pool of {dm.num_unlabeled}")
        dirpath = self.dirpath or trainer.log_dir or trainer.default_root_dir
        self._dirpath = trainer.strategy.broadcast(str(dirpath))
        if trainer.is_global_zero:
            records.remove_stale_temps(self._dirpath)
        self._sharded = trainer.world_size > 1 and not self.strategy.joint
        self.stopping.setup(self)
        max_needed = (self.rounds + 1) * self.convergence.max_epochs
        if trainer.max_epochs is not None and 0 <= trainer.max_epochs < max_needed:
            rank_zero_warn(f"Trainer(max_epochs={trainer.max_epochs}) may stop before all {self.rounds} rounds "
                           f"finish (up to {max_needed} epochs); use max_epochs=-1")

    def _load_records_state(self, dm: ActiveLearningDataModule, path: str) -> None:
        state = records.read_state(path)
        snapshot = dm.state_dict()
        try:
            dm.load_state_dict({**snapshot, "labeled": state["labeled"], "dataset_size": state["dataset_size"],
                                "given_labels": state.get("given_labels", [])})
        except LabelError as err:
            raise LabelError(f"state file {path} does not fit this pool: {err}") from err
        self.round = int(state["round"])
        self.history = [row for row in state.get("history", []) if int(row["round"]) < self.round]
        self.stopping.load_state_dict(state.get("stopping", {}))
        self._weights_in_state = state.get("weights")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = self.datamodule
        probe = dm.pool_dataset(range(2)) if dm.num_unlabeled >= 2 else dm.labeled_dataset(evaluation=True)
        x = batch_inputs(next(iter(dm.eval_loader(probe))), dm.label_key)
        with evaluation(pl_module), torch.no_grad():
            logits = forward_logits(pl_module, to_model(x, pl_module))
        dm.use_model_classes(int(logits.shape[1]))
        if self.resume_from_state and trainer.ckpt_path is None:
            if restore_weights(pl_module, self._weights_in_state, self.resume_from_state, self.round):
                self._weights = resolve_weights(self._weights_in_state, self.resume_from_state)
        elif trainer.ckpt_path is not None:
            self._weights = str(trainer.ckpt_path)
        self._loss = self._loss.to(pl_module.device)
        if self._rng_to_restore is not None:
            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        if self._is_global_zero:
            queries.cut_back(self._dirpath, self.round)
        if self.pending is not None:
            self._collect_pending(trainer, pl_module)
        self._write_records()

    # ---- per epoch -------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):
            n = batch_size(batch_inputs(batch, self.datamodule.label_key))
            self._loss.update(loss.detach().float().to(self._loss.device), n)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.finished:
            return
        sync_buffers(trainer, pl_module)
        loss = float(self._loss.compute()) if self._loss.update_count else math.inf
        self._loss.reset()
        accuracy = None
        if self.convergence.accuracy_threshold is not None:
            accuracy = self._accuracy(trainer, pl_module, self.datamodule.labeled_dataset(evaluation=True))
        if not self.convergence.update(loss, accuracy):
            return
        self._end_round(trainer, pl_module)

    # ---- one round -------------------------------------------------------------------------------------
    def _end_round(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = self.datamodule
        test = dm.splits.test
        row: dict[str, Any] = {
            "round": self.round, "labeled": dm.num_labeled, "pool": dm.num_unlabeled,
            "test_acc": self._accuracy(trainer, pl_module, test) if test is not None else float("nan"),
            "score_seconds": 0.0, "epochs": self.convergence.epochs, "train_loss": self.convergence.last_loss,
            "train_acc": self._accuracy(trainer, pl_module, dm.labeled_dataset(evaluation=True)),
        }
        warning = near_chance_warning(self.round, row["train_acc"], self._num_classes, self.convergence.reason)
        if warning:
            rank_zero_warn(warning)
        last = self.round >= self.rounds or dm.num_unlabeled == 0
        snapshot = dm.state_dict()
        try:
            last = self.stopping.check(trainer, pl_module, self, row, "train") or last
            query, metrics = (None, {}) if last else self._query(trainer, pl_module, row)
            if query is not None and self.stopping.check(trainer, pl_module, self, row, "query"):
                query, last = None, True
            if query is not None:
                if self.log_approximation_ratio:
                    metrics["al/approximation_ratio"] = self._approximation_ratio(pl_module, query)
                try:
                    labels = self.oracle.label(dm, query)
                except LabelsPending as pending:
                    self._pause(trainer, row, query, metrics, pending)
                    return
                dm.label(query.indices, labels)
                self._record_query(query)
            self._log(trainer, pl_module, row, metrics, query)
        except BaseException:
            dm.load_state_dict(snapshot)
            raise
        self._advance(trainer, pl_module, row, last)

    def _advance(self, trainer: Trainer, pl_module: LightningModule, row: dict[str, Any], last: bool) -> None:
        """Record a finished round; then stop (last round) or start the next one."""
        dm = self.datamodule
        self.history.append(row)
        if self.verbose:
            say(f"[active learning] round {row['round']}: labeled={row['labeled']} pool={row['pool']} "
                f"test_acc={row['test_acc']:.4f} train_loss={row['train_loss']:.4f} "
                f"train_acc={row['train_acc']:.4f} epochs={row['epochs']} ({self.convergence.reason})")
        if last:
            if row.get("stopped_by") and self.stopping.enforce:
                say(f"[active learning] stopping after round {row['round']}: " + "; ".join(self.stopping.messages))
            elif dm.num_unlabeled == 0 and self.round < self.rounds:
                say(f"[active learning] the pool is empty after round {self.round}: stopping")
            self.finished = True
            trainer.should_stop = True
            self._write_records()
            return
        self.round += 1
        self.convergence.reset()
        if self.reset == "init":
            self._reinitialise(trainer, pl_module)
        trainer.fit_loop._combined_loader = None
        self._weights = (records.join(self._dirpath, f"al_round_{self.round - 1}.ckpt")
                         if self.save_round_checkpoints else None)
        self._write_records()
        if self.save_round_checkpoints:
            records.save_checkpoint(trainer, records.round_checkpoint(self._dirpath, self.round - 1))

    def _pause(self, trainer: Trainer, row: dict[str, Any], query: Query, metrics: dict[str, float],
               pending: LabelsPending) -> None:
        """Keep the query, save a checkpoint on every rank and stop: resuming from it collects the labels."""
        self.pending = {"row": row, "metrics": metrics, "indices": list(query.indices),
                        "scores": query.scores, "pseudo_labels": query.pseudo_labels}
        path = records.join(self._dirpath, f"al_pending_round_{self.round}.ckpt")
        records.save_checkpoint(trainer, path)
        self._weights = path
        self._write_records()
        trainer.should_stop = True
        say(f"[active learning] round {self.round}: labels pending ({pending}). Resume with "
            f"ckpt_path={path} once they are in.")

    def _collect_pending(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self.pending is not None
        dm, p = self.datamodule, self.pending
        query = Query(self.round, list(p["indices"]), p["scores"], p["pseudo_labels"])
        labels = self.oracle.collect(dm, query)
        dm.label(query.indices, labels)
        self._record_query(query)
        self.pending = None
        self._log(trainer, pl_module, p["row"], p["metrics"], query)
        self._advance(trainer, pl_module, p["row"], last=False)

    def _query(self, trainer: Trainer, pl_module: LightningModule,
               row: dict[str, Any]) -> tuple[Query, dict[str, float]]:
        """Score the pool and choose what to label (nothing changes yet)."""
        dm = self.datamodule
        positions = list(range(dm.num_unlabeled))
        if self.pool_subset is not None and self.pool_subset < len(positions):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.round)
            positions = sorted(torch.randperm(len(positions), generator=gen)[: self.pool_subset].tolist())
        b = min(self.query_size, len(positions))
        if b < self.query_size and not self._warned_small_pool:
            rank_zero_warn(f"Round {self.round}: only {len(positions)} pool samples remain for query_size="
                           f"{self.query_size}; labeling all of them")
            self._warned_small_pool = True
        start = time.perf_counter()
        try:
            chosen, scores = self._select(trainer, pl_module, positions, b)
        except NonFiniteScoresError as err:
            raise NonFiniteScoresError(f"Round {self.round}: {err}; the labeled set is unchanged") from err
        row["score_seconds"] = round(time.perf_counter() - start, 4)
        unlabeled = dm.unlabeled_indices
        indices = [unlabeled[positions[p]] for p in chosen.tolist()]
        check_agreement(trainer, indices, f"the round-{self.round} selection")
        pseudo = getattr(self.strategy, "last_pseudo_labels", None)
        if isinstance(pseudo, Tensor) and len(pseudo) == len(positions):
            pseudo = pseudo[chosen]
        else:
            queried = dm.eval_loader(torch.utils.data.Subset(dm.splits.pool_eval, indices))
            pseudo = probabilities(pl_module, queried, label_key=self.datamodule.label_key).argmax(1)
        query = Query(self.round, indices, scores[chosen] if scores is not None else None, pseudo)
        self._last_pool_scores = scores
        return query, _score_stats(scores, chosen)

    def _select(self, trainer: Trainer, pl_module: LightningModule, positions: list[int],
                b: int) -> tuple[Tensor, Tensor | None]:
        """Positions (into ``positions``) of the queried samples, and the scores if the strategy gave them."""
        dm = self.datamodule
        strategy = self.strategy
        strategy.progress = trainer.is_global_zero and trainer.progress_bar_callback is not None
        strategy.label_key = self.datamodule.label_key
        labeled = dm.labeled_dataset(evaluation=True)
        if not self._sharded:
            strategy.reduce_sum = _identity
            chosen = strategy.select(pl_module, dm.eval_loader(dm.pool_dataset(positions)), dm.eval_loader(labeled),
                                     b)
            return chosen, strategy.last_scores
        rank, world = trainer.global_rank, trainer.world_size
        strategy.reduce_sum = lambda t: reduce_sum(trainer, t)
        mine = shard(positions, rank, world)
        labeled_shard = torch.utils.data.Subset(labeled, shard(range(len(labeled)), rank, world))
        local = strategy.score(pl_module, dm.eval_loader(dm.pool_dataset(mine)), dm.eval_loader(labeled_shard))
        scores = gather_shards(trainer, local.double(), len(positions))
        return top_b(check_finite(scores), b), scores

    # ---- evaluation, reset, logging, records -------------------------------------------------------------
    def _accuracy(self, trainer: Trainer, pl_module: LightningModule, dataset: Any) -> float:
        """Accuracy on ``dataset`` in eval mode, each rank on its shard, reduced by torchmetrics."""
        dm = self.datamodule
        if trainer.world_size > 1:
            dataset = torch.utils.data.Subset(dataset, shard(range(len(dataset)), trainer.global_rank,
                                                             trainer.world_size))
        metric: MulticlassAccuracy | None = None
        with evaluation(pl_module), torch.no_grad():
            for batch in dm.eval_loader(dataset):
                logits = forward_logits(pl_module, to_model(batch_inputs(batch, dm.label_key), pl_module))
                if metric is None:
                    self._num_classes = logits.shape[1]
                    metric = MulticlassAccuracy(logits.shape[1], average="micro").to(logits.device)
                metric.update(logits, batch_targets(batch, dm.label_key).to(logits.device))
        if metric is None:
            metric = MulticlassAccuracy(2, average="micro").to(pl_module.device)
        return float(metric.compute())

    def _approximation_ratio(self, pl_module: LightningModule, query: Query) -> float:
        """Eq. 14 for the queried batch, before it joins the labeled set."""
        dm = self.datamodule
        queried = torch.utils.data.Subset(dm.splits.pool_eval, query.indices)
        return approximation_ratio(pl_module, dm.eval_loader(dm.labeled_dataset(evaluation=True)),
                                   dm.eval_loader(queried), getattr(self.strategy, "params", None))

    def _reinitialise(self, trainer: Trainer, pl_module: LightningModule) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + self.round)
            for module in pl_module.modules():
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
        for optimizer in trainer.optimizers:
            optimizer.state.clear()

    def _log(self, trainer: Trainer, pl_module: LightningModule, row: dict[str, Any], extra: dict[str, float],
             query: Query | None) -> None:
        metrics = {"al/round": row["round"], "al/labeled": row["labeled"], "al/pool": row["pool"],
                   "al/test_acc": row["test_acc"], "al/score_seconds": row["score_seconds"],
                   "al/epochs": row["epochs"], "al/train_loss": row["train_loss"], "al/train_acc": row["train_acc"],
                   **self.stopping.metrics(), **extra}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        log_round_media(trainer, self.history + [row], query, getattr(self, "_last_pool_scores", None),
                        self.datamodule)

    def _state(self) -> dict[str, Any]:
        """``al_state.json``: the split, the finished rounds' rows (and the paused round's, to be finished by
        ``label import``) and the checkpoint holding the weights to continue from."""
        dm_state = self.datamodule.state_dict()
        state = {"round": self.round, "dataset_size": dm_state["dataset_size"], "labeled": dm_state["labeled"],
                 "given_labels": dm_state["given_labels"], "history": self.history,
                 "strategy": repr(self.strategy), "seed": self.seed, "stopping": self.stopping.state_dict(),
                 "weights": weights_reference(self._weights, self._dirpath)}
        if self.pending is not None:
            state["pending_row"] = self.pending["row"]
        return state

    def _record_query(self, query: Query) -> None:
        """Rewrite ``al_queries.csv`` with this round's rows, labels as the labeled set now serves them."""
        if self._is_global_zero:
            queries.write_round(self._dirpath, query.round,
                                queries.query_rows(query, self.datamodule, getattr(self.oracle, "source", "oracle")))

    def _write_records(self) -> None:
        if self._is_global_zero:
            records.write_rounds(self._dirpath, self.history)
            records.write_state(self._dirpath, self._state())

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.verbose and self.history:
            report(trainer, pl_module, self._dirpath, self.history, self.save_round_checkpoints)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """On Ctrl-C or SIGTERM, name the last round checkpoint and the command that resumes from it."""
        saved = records.round_checkpoint(self._dirpath, self.round - 1) if hasattr(self, "_dirpath") else None
        if saved is None or self.round == 0 or not self.save_round_checkpoints or not records.exists(saved):
            saved = None
        message = interrupt_message(exception, self.round, saved)
        if message is not None:
            end_progress_bar(trainer, pl_module)
            say(message)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[wandb_link.CHECKPOINT_KEY] = wandb_link.identity(trainer)

    # ---- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "finished": self.finished, "history": [dict(r) for r in self.history],
                "convergence": self.convergence.state_dict(), "rng": _get_rng_state(), "pending": self.pending,
                "strategy": self.strategy.state_dict() if hasattr(self.strategy, "state_dict") else None,
                "stopping": self.stopping.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round = int(state_dict["round"])
        self.finished = bool(state_dict["finished"])
        self.history = [dict(r) for r in state_dict["history"]]
        self.convergence.load_state_dict(state_dict["convergence"])
        self._rng_to_restore = state_dict.get("rng")
        self.pending = state_dict.get("pending")
        self.stopping.load_state_dict(state_dict.get("stopping", {}))
        if state_dict.get("strategy") is not None and hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(state_dict["strategy"])


def _identity(t: Tensor) -> Tensor:
    return t


def _score_stats(scores: Tensor | None, chosen: Tensor) -> dict[str, float]:
    if scores is None or scores.numel() == 0:
        return {}
    s = scores.double()
    return {"al/score_mean": float(s.mean()), "al/score_std": float(s.std()) if s.numel() > 1 else 0.0,
            "al/score_max": float(s.max()), "al/score_min": float(s.min()),
            "al/selected_score_mean": float(s[chosen].mean())}


def _get_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
