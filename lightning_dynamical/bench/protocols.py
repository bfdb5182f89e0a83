"""Named protocols (``smoke``, ``paper``), grids of benches, and the run-time estimate."""


from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_dynamical.bench.presets import PRESETS
from lightning_dynamical.data.splits import DatasetSplits, dataset_size
from lightning_dynamical.tasks.batches import batch_inputs, batch_size, batch_targets, forward_logits


@dataclass(frozen=True)
class Protocol:
    """A named set of bench defaults; ``datasets`` x ``query_sizes`` make a grid of benches (one folder each)."""

    about: str
    defaults: dict[str, Any]
    datasets: tuple[str, ...] = ()
    query_sizes: tuple[int, ...] = ()


PROTOCOLS: dict[str, Protocol] = {
    "smoke": Protocol(
        "seconds on a CPU: digits (400-sample pool), random/entropy/margin/dynamical, 1 seed, M=40, b=20, R=2, "
        "at most 3 epochs per round",
        {"data": "digits", "strategies": ["random", "entropy", "margin", "dynamical"], "seeds": [0],
         "initial_size": 40, "query_size": 20, "rounds": 2, "max_epochs_per_round": 3, "patience": 2,
         "pool_limit": 400}),
    "paper": Protocol(
        "dynamicAL's protocol (NeurIPS 2022): CIFAR-10 with ResNet-18, SVHN with VGG-11, Caltech101 with "
        "ResNet-18; M=500, b in {250, 500, 1000}, R=5, 5 seeds; random/entropy/margin/badge/coreset/dynamical",
        {"strategies": ["random", "entropy", "margin", "badge", "coreset", "dynamical"], "seeds": [0, 1, 2, 3, 4],
         "initial_size": 500, "rounds": 5, "max_epochs_per_round": 100, "patience": 5, "train_acc_threshold": 0.99},
        datasets=("cifar10_resnet18", "svhn", "caltech101"), query_sizes=(250, 500, 1000)),
}


def grid(args: argparse.Namespace) -> list[argparse.Namespace]:
    """One namespace per bench to run: the protocol's data sets x query sizes (each in ``out/<data>_b<b>``),
    or just the one given by ``--data`` and ``--query-size``."""
    datasets = args.datasets or [args.data]
    sizes = args.query_sizes or [args.query_size]
    if len(datasets) == 1 and len(sizes) == 1 and not (args.protocol and PROTOCOLS[args.protocol].datasets):
        return [argparse.Namespace(**{**vars(args), "data": datasets[0], "query_size": sizes[0]})]
    return [argparse.Namespace(**{**vars(args), "data": d, "query_size": b, "out": str(Path(args.out) / f"{d}_b{b}")})
            for d in datasets for b in sizes]


def per_sample_seconds(args: argparse.Namespace, splits: DatasetSplits) -> tuple[float, float]:
    """Measured seconds per sample of one training step (forward, backward, update) and of one evaluation
    forward, for this preset's network on this machine."""
    preset = PRESETS[args.data]
    net = preset.net(splits.num_classes, args.image_size)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    batch = next(iter(DataLoader(splits.pool, batch_size=preset.batch_size, shuffle=False)))
    inputs, y = batch_inputs(batch), batch_targets(batch)
    n = batch_size(inputs)

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(forward_logits(net, inputs), y).backward()
        optimizer.step()

    def evaluate() -> None:
        with torch.no_grad():
            forward_logits(net, inputs)

    timings = []
    for fn, mode in ((step, True), (evaluate, False)):
        net.train(mode)
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(2):
            fn()
        timings.append((time.perf_counter() - start) / (2 * n))
    return timings[0], timings[1]


def scoring_seconds(strategy: str, n: int, train: float, evaluate: float) -> float:
    """Rough pool-scoring time: gradient-based strategies ~ a training step per sample (the docs' measured
    engine throughput is 0.76-0.89 of a batched forward+backward), BALD 20 forwards, others one forward."""
    if strategy == "random":
        return 0.0
    if strategy.startswith("dynamical") or strategy in ("badge", "albl"):
        return 1.3 * n * train
    return (20 if strategy == "bald" else 1) * n * evaluate


TYPICAL_EPOCHS_PER_ROUND = 30
"""Epochs a converged round took in this project's benches (mean per bench: digits 11, MNIST 24, AG News 30,
``docs/benchmarks.md``): the convergence rule's typical cost, against the cap's worst case."""


def estimate_seconds(args: argparse.Namespace, splits: DatasetSplits, epochs: int | None = None) -> float:
    """One bench's wall time when every round trains ``epochs`` epochs (default ``max_epochs_per_round``: an upper
    bound)."""
    train, evaluate = per_sample_seconds(args, splits)
    pool = min(dataset_size(splits.pool), args.pool_limit or dataset_size(splits.pool))
    pool -= int(args.val_size) if isinstance(args.val_size, int) else int(args.val_size * pool)
    test = dataset_size(splits.test) if splits.test is not None else 0
    total = 0.0
    for strategy in args.strategies:
        for k in range(args.rounds + 1):
            labeled = args.initial_size + k * args.query_size
            total += (epochs or args.max_epochs_per_round) * labeled * (train + evaluate) + (test + labeled) * evaluate
            if k < args.rounds:
                total += scoring_seconds(strategy, pool - labeled, train, evaluate)
    return total * len(args.seeds)


def duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"
