"""What both examples share: the active-learning arguments and one run with its per-round table."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from lightning_dynamical import ActiveLearningLoop, DynamicAL, Entropy, Random, Strategy
from lightning_dynamical.reporting.clock import RoundClock


def make_strategy(name: str, gamma: float, seed: int) -> Strategy:
    """dynamicAL, or a baseline to compare it with."""
    return {"dynamical": lambda: DynamicAL(gamma=gamma), "random": lambda: Random(seed=seed),
            "entropy": Entropy}[name]()


def add_loop_arguments(p: argparse.ArgumentParser, *, query_size: int, rounds: int, max_epochs: int,
                       out: str, initial_size: int = 100, fit_threshold: float | None = 0.99) -> None:
    """The active-learning options the examples take, with each example's defaults."""
    p.add_argument("--initial-size", type=int, default=initial_size, help="M")
    p.add_argument("--train-acc-threshold", type=lambda t: None if t == "none" else float(t), default=fit_threshold,
                   help="labeled-set accuracy a round must hold before it may end ('none': the loss alone)")
    p.add_argument("--query-size", type=int, default=query_size, help="b")
    p.add_argument("--rounds", type=int, default=rounds, help="R")
    p.add_argument("--strategy", choices=["dynamical", "random", "entropy"], default="dynamical")
    p.add_argument("--gamma", type=float, default=2.0, help="dynamicAL's gamma")
    p.add_argument("--max-epochs-per-round", type=int, default=max_epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out)


def run(model: LightningModule, dm: LightningDataModule, args: argparse.Namespace, title: Callable[[], str]) -> None:
    """One active-learning run with the arguments of :func:`add_loop_arguments`, then ``title()`` (called after
    the fit, when the data module is set up) and the per-round table."""
    loop = ActiveLearningLoop(make_strategy(args.strategy, args.gamma, args.seed), query_size=args.query_size,
                              rounds=args.rounds, train_acc_threshold=args.train_acc_threshold,
                              max_epochs_per_round=args.max_epochs_per_round, seed=args.seed, dirpath=args.out,
                              save_round_checkpoints=False)
    clock = RoundClock(loop)
    trainer = Trainer(max_epochs=-1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=args.out,
                      callbacks=[loop, clock])
    trainer.fit(model, datamodule=dm)
    print(title())
    metric = f"test_{loop.history[0]['metric']}" if loop.history else "test_acc"
    extra = f" {metric} |" if metric != "test_acc" else ""
    print(f"| round | labeled | test_acc |{extra} epochs | score_s | wall_s |\n" + "|---" * (6 + bool(extra)) + "|")
    for row, wall in zip(loop.history, clock.times):
        headline = f" {row['test_metric']:.4f} |" if extra else ""
        print(f"| {row['round']} | {row['labeled']} | {row['test_acc']:.4f} |{headline} {row['epochs']} | "
              f"{row['score_seconds']:.1f} | {wall:.1f} |")
