"""One seeded run per strategy x seed, and ``results.csv``."""


from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from tqdm.auto import tqdm
from typing_extensions import override

from lightning_dynamical.bench.presets import PRESETS, STRATEGIES, load_splits, preset_task
from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.loop.callback import ActiveLearningLoop
from lightning_dynamical.loop.stopping import (
    GradientNormDecay,
    StabilizingPredictions,
    StoppingCriterion,
    ValidationPlateau,
)
from lightning_dynamical.models.classifier import Classifier
from lightning_dynamical.records import files as records
from lightning_dynamical.reporting.clock import RoundClock
from lightning_dynamical.strategies.base import Strategy
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.classification import CLASSIFICATION, Classification

RESULT_FIELDS = ("strategy", "seed", "round", "labeled", "test_acc", "best_epoch_test_acc", "train_loss", "train_acc",
                 "epochs", "converged_by", "smoothed_loss", "query_sqnorm_median", "query_dot_median",
                 "query_dot_ratio_median", "query_approximation_ratio", "stopped_by", "metric", "test_metric",
                 "score_seconds", "wall_seconds")
"""``test_metric`` is the task's headline metric (``metric`` names it: ``acc``, ``miou``, ``f1``): what the report
compares; for classification it is ``test_acc``."""
TIMING_FIELDS = ("score_seconds", "wall_seconds")
TEXT_FIELDS = ("strategy", "converged_by", "stopped_by", "metric")
INT_FIELDS = ("seed", "round", "labeled", "epochs")
LOOP_COLUMNS = RESULT_FIELDS[2:-1]
"""The columns copied from the loop's round rows (``best_epoch_test_acc`` and ``wall_seconds`` come from the bench's
own callbacks)."""


class BestEpochTestAccuracy(Callback):
    """The best test accuracy over a round's epochs, as the authors report it. It is selected on the test set, so
    it is recorded only as a separately labelled column (``best_epoch_test_acc``), never as the bench's metric."""

    def __init__(self, loop: ActiveLearningLoop) -> None:
        self.loop = loop
        self.best: list[float] = []
        self._round_best = math.nan

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = self.loop.datamodule
        if dm.splits.test is None:
            return
        accuracy = self.loop.evaluator.accuracy(trainer, pl_module, dm, dm.splits.test)
        self._round_best = accuracy if math.isnan(self._round_best) else max(self._round_best, accuracy)
        if len(self.loop.history) > len(self.best):  # the loop (called first) just recorded a round
            self.best.append(self._round_best)
            self._round_best = math.nan



def run_one(args: argparse.Namespace, splits: DatasetSplits, strategy: str, seed: int, bar: Any) -> list[dict]:
    """One seeded active-learning run; its rows for ``results.csv``."""
    preset = PRESETS[args.data]
    seed_everything(seed + args.trainer_seed_offset, verbose=False)
    dm = ActiveLearningDataModule(splits.pool, splits.val, splits.test, splits.pool_eval,
                                  initial_size=args.initial_size, balanced=args.balanced, val_size=args.val_size,
                                  batch_size=preset.batch_size, eval_batch_size=preset.eval_batch_size, seed=seed,
                                  task=preset_task(args))
    model = Classifier(preset.net(splits.num_classes, args.image_size), num_classes=splits.num_classes,
                       optimizer=preset.optimizer, lr=preset.lr, weight_decay=preset.weight_decay)
    run_dir = str(Path(args.out) / "runs" / f"{strategy}_seed{seed}")
    chosen = STRATEGIES[strategy](seed)
    loop = ActiveLearningLoop(chosen, query_size=args.query_size, rounds=args.rounds,
                              patience=args.patience, train_acc_threshold=args.train_acc_threshold,
                              max_epochs_per_round=args.max_epochs_per_round, pool_subset=args.pool_subset,
                              smoothing=args.smoothing, rel_delta=args.rel_delta, min_delta=args.min_delta,
                              fit_epochs=args.fit_epochs, loss_target=args.loss_target,
                              reset="optimizer" if args.fresh_optimizer else "none", seed=seed, dirpath=run_dir,
                              save_round_checkpoints=False,
                              stop=bench_criteria(chosen, splits.val is not None or args.val_size > 0,
                                                  preset_task(args)),
                              stop_mode="record", verbose=False)
    clock = RoundClock(loop, bar)
    best = BestEpochTestAccuracy(loop)
    callbacks: list[Callback] = [loop, clock] + ([best] if args.best_epoch_test_acc else [])
    trainer = Trainer(max_epochs=-1, accelerator=args.accelerator, devices=1, deterministic=True, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=run_dir, callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    bests = best.best + [math.nan] * (len(loop.history) - len(best.best))
    return [{"strategy": strategy, "seed": seed, **{k: r.get(k, math.nan) for k in LOOP_COLUMNS},
             "best_epoch_test_acc": b, "score_seconds": r["score_seconds"], "wall_seconds": wall}
            for r, wall, b in zip(loop.history, clock.times, bests)]


def bench_criteria(strategy: Strategy, has_val: bool, task: Task = CLASSIFICATION) -> list[StoppingCriterion]:
    """The stopping criteria every run records (never enforced): stabilising predictions (classification: one
    class per sample), a validation plateau when there is a validation split, and the gradient-norm rule for
    dynamicAL."""
    criteria: list[StoppingCriterion] = []
    if isinstance(task, Classification):
        criteria.append(StabilizingPredictions(threshold=0.99, rounds=2, stop_set_size=1000))
    if has_val:
        criteria.append(ValidationPlateau(patience=2))
    if isinstance(strategy, DynamicAL):
        criteria.append(GradientNormDecay(fraction=0.1))
    return criteria


def run_bench(args: argparse.Namespace) -> list[dict]:
    """Every strategy x seed, ``results.csv`` rewritten after each run (an interrupted bench keeps its rows)."""
    splits = load_splits(args)
    args.has_val = splits.val is not None or args.val_size > 0
    rows: list[dict] = []
    deterministic = torch.are_deterministic_algorithms_enabled()
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # no per-run device banners between progress updates
    total = len(args.strategies) * len(args.seeds) * (args.rounds + 1)
    with tqdm(total=total, unit="round", file=sys.stderr, dynamic_ncols=True) as bar, warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*before training converged.*")  # results.csv has converged_by
        try:
            for strategy in args.strategies:
                for seed in args.seeds:
                    bar.set_description(f"{strategy} seed {seed}")
                    rows += run_one(args, splits, strategy, seed, bar)
                    write_results(Path(args.out) / "results.csv", rows)
        finally:
            torch.use_deterministic_algorithms(deterministic)
            lightning_log.setLevel(level)
    return rows



def write_results(path: Path, rows: Sequence[dict]) -> None:
    records.atomic_write_csv(str(path), RESULT_FIELDS, rows, extras="raise")


def read_results(path: str | Path) -> list[dict]:
    """``results.csv`` back with numbers parsed; a column an older bench did not write reads as NaN ("" for text,
    0 for ``epochs``)."""
    def parse(field: str, text: str | None) -> Any:
        if field in TEXT_FIELDS:
            return text or ""
        if field in INT_FIELDS:
            return int(text) if text else 0
        return float(text) if text else math.nan

    with open(path) as f:
        rows = [{k: parse(k, r.get(k)) for k in RESULT_FIELDS} for r in csv.DictReader(f)]
    for row in rows:  # results from before tasks: classification, whose headline is the accuracy
        if not row["metric"]:
            row.update(metric="acc", test_metric=row["test_acc"])
    return rows
