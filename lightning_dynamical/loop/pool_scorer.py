"""``PoolScorer``: one round's query for every strategy, in one process or sharded over DDP ranks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.data.splits import dataset_size
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop.distributed import check_agreement, gather_shards, reduce_sum, shard
from lightning_dynamical.records import rng
from lightning_dynamical.records.queries import Query
from lightning_dynamical.scoring.common import scoring_model
from lightning_dynamical.scoring.diagnostics import NO_REGIME, QueryRegime, query_regime
from lightning_dynamical.strategies.base import NonFiniteScoresError, Reducer, Selection, Strategy, identity
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.inference import collect
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import evaluation, forward_logits


@dataclass(frozen=True, eq=False)
class Scored:
    """A round's query, the whole scored pool's scores (for logging), the seconds scoring took and, for dynamicAL
    (or when asked for), the queried batch's :class:`~lightning_dynamical.scoring.diagnostics.QueryRegime`."""

    query: Query
    pool_scores: Tensor | None
    seconds: float
    regime: QueryRegime | None = None

    def row(self) -> dict[str, float]:
        """The round's ``al_rounds.csv`` columns from the query (NaN where not measured)."""
        return {"score_seconds": self.seconds, **(self.regime or NO_REGIME).row()}

    def metrics(self) -> dict[str, float]:
        """Score statistics of the pool and of the queried samples, for the loggers."""
        s = self.pool_scores
        ratio = {} if self.regime is None else {  # Eq. 14 keeps the key it was logged under before the regime
            "al/approximation_ratio" if k == "query_approximation_ratio" else f"al/{k}": v
            for k, v in self.regime.row().items()}
        if s is None or s.numel() == 0:
            return ratio
        s = s.double()
        chosen = self.query.scores.double() if self.query.scores is not None else s.new_zeros(0)
        return {"al/score_mean": float(s.mean()), "al/score_std": float(s.std()) if s.numel() > 1 else 0.0,
                "al/score_max": float(s.max()), "al/score_min": float(s.min()),
                "al/selected_score_mean": float(chosen.mean()), **ratio}


class PoolScorer:
    """Asks ``strategy`` for a round's query over the unlabeled pool (or a seeded subset of it).

    A strategy that is not ``joint`` is scored in shards under DDP (each rank scores a contiguous part of the
    pool, the scores are gathered and the top-b taken); a joint one selects on the whole pool on every rank.
    Either way every rank must end with the same pool indices (checked by digest), and the queried samples
    get the model's pseudo labels when the strategy gave none.

    Args:
        strategy: the query strategy.
        pool_subset: score only a seeded random subset of this many pool samples per round.
        seed: seeds the subsets.
        query_size: samples per query (a subset holds at least this many).
        approximation_ratio: also measure the query regime (Eq. 14 and the medians of ``||g_u||^2`` and
            ``g_u . G_S``) for strategies other than dynamicAL, which always has it (one gradient pass over the
            labeled set and two over the queried batch, over DynamicAL's ``params``).
    """

    def __init__(self, strategy: Strategy, pool_subset: int | None, seed: int, query_size: int,
                 approximation_ratio: bool = False) -> None:
        if pool_subset is not None and (not isinstance(pool_subset, int) or pool_subset < query_size):
            raise ConfigError(f"pool_subset must be null or an int >= query_size ({query_size}), got {pool_subset!r}")
        self.strategy = strategy
        self.pool_subset = pool_subset
        self.seed = seed
        self.approximation_ratio = approximation_ratio
        self.sharded = False
        self._warned_small_pool = False

    def setup(self, trainer: Trainer, datamodule: ActiveLearningDataModule) -> None:
        """Decide sharding for this trainer; the strategy takes the data's task (or refuses it, before anything
        changes) and reads dict batches' targets under the data's key."""
        self.strategy.use_task(datamodule.task)
        self.sharded = trainer.world_size > 1 and not self.strategy.joint
        self.strategy.label_key = datamodule.label_key

    def query(self, trainer: Trainer, model: LightningModule, dm: ActiveLearningDataModule, round: int,
              query_size: int) -> Scored:
        """Score the pool and choose what to label in ``round`` (nothing changes yet)."""
        positions = self._positions(dm.num_unlabeled, round)
        b = min(query_size, len(positions))
        if b < query_size and not self._warned_small_pool:
            rank_zero_warn(f"Round {round}: only {len(positions)} pool samples remain for query_size={query_size}; "
                           "labeling all of them")
            self._warned_small_pool = True
        start = time.perf_counter()
        try:
            selection = self.select(trainer, model, dm, positions, b)
        except NonFiniteScoresError as err:
            indices = dm.pool_indices(positions[p] for p in err.positions)
            at = f", at pool indices {indices}{' (the first ten)' if len(indices) == 10 else ''}" if indices else ""
            raise NonFiniteScoresError(f"Round {round}: {err}{at}; the labeled set is unchanged",
                                       err.positions, indices) from err
        seconds = round_seconds(time.perf_counter() - start)
        indices = dm.pool_indices(positions[p] for p in selection.positions.tolist())
        check_agreement(trainer, indices, f"the round-{round} selection")
        queried = dm.eval_loader(Subset(dm.splits.pool_eval, indices))
        pseudo = selection.pseudo_labels
        if pseudo is None:
            pseudo = predictions(model, queried, dm.task, dm.label_key)
        measure = self.approximation_ratio or isinstance(self.strategy, DynamicAL)
        regime = self._regime(model, dm, queried) if measure else None
        return Scored(Query(round, indices, selection.scores, pseudo), selection.pool_scores, seconds, regime)

    def _regime(self, model: LightningModule, dm: ActiveLearningDataModule, queried: DataLoader) -> QueryRegime:
        """The queried batch's regime (its loader), before it joins the labeled set (over DynamicAL's
        ``params``); the same on every rank (each computes it whole)."""
        params = self.strategy.params if isinstance(self.strategy, DynamicAL) else None
        return query_regime(model, dm.eval_loader(dm.labeled_dataset(evaluation=True)), queried, params,
                            label_key=dm.label_key, task=dm.task)

    def select(self, trainer: Trainer, model: LightningModule, dm: ActiveLearningDataModule, positions: list[int],
               b: int) -> Selection:
        """The strategy's selection among the unlabeled samples at ``positions`` (positions into that list)."""
        progress = trainer.is_global_zero and trainer.progress_bar_callback is not None
        labeled = dm.labeled_dataset(evaluation=True)
        if not self.sharded:
            return self.strategy.select(model, dm.eval_loader(dm.pool_dataset(positions)), dm.eval_loader(labeled), b,
                                        reduce=identity, progress=progress)
        rank, world = trainer.global_rank, trainer.world_size
        reduce: Reducer = lambda t: reduce_sum(trainer, t)  # noqa: E731
        mine = dm.eval_loader(dm.pool_dataset(shard(positions, rank, world)))
        labeled_shard = dm.eval_loader(Subset(labeled, shard(range(dataset_size(labeled)), rank, world)))
        local = self.strategy.score(model, mine, labeled_shard, reduce=reduce, progress=progress)
        return Selection.top(gather_shards(trainer, local.double(), len(positions)), b)

    def _positions(self, pool_size: int, round: int) -> list[int]:
        """Positions of the unlabeled samples scored in ``round``: all, or a seeded subset in its drawn order (sorted,
        a strategy whose draw depends only on the pool's size, as ``Random``'s does, would pick the same ranks of
        every round's subset: the low and high ends of the pool)."""
        if self.pool_subset is None or self.pool_subset >= pool_size:
            return list(range(pool_size))
        gen = rng.generator(self.seed, round)
        return torch.randperm(pool_size, generator=gen)[: self.pool_subset].tolist()


def predictions(model: nn.Module, loader: DataLoader, task: Task, label_key: str) -> Tensor:
    """The task's pseudo targets of every sample in ``loader`` (eval mode, no grad): what the model predicts (at the
    real tokens only for token classification, batches padded to the longest)."""
    with scoring_model(model) as scored, evaluation(scored):
        out = collect(scored, loader, lambda x: (task.batch_pseudo_targets(forward_logits(scored, x, task), x),),
                      label_key=label_key, join=task.concat_targets)
    return out[0] if out else torch.zeros(0, dtype=torch.long)


def round_seconds(seconds: float) -> float:
    """Seconds as recorded in ``al_rounds.csv``."""
    return round(seconds, 4)
