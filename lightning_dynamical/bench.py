"""``lightning-dynamical-bench``: strategies x seeds under one protocol (initial M, query size b, rounds R).

Each run is one ``Trainer`` with an :class:`ActiveLearningLoop`, seeded with ``seed_everything(seed)`` and
deterministic on CPU. Writes ``results.csv`` (one row per run and round), ``learning_curve.png`` (mean and
std band per strategy) and ``summary.md`` (accuracy per round, area under the learning curve, times, a
paired comparison with Random and Entropy, and where each recorded stopping criterion would have stopped).
Same seeds, same CSV, except the timing columns ``score_seconds`` and ``wall_seconds`` (the last two).
``--protocol smoke`` is a seconds-long check; ``--protocol paper`` is dynamicAL's own protocol (a grid of data
sets and query sizes) and prints its estimated run time first.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import torch
from lightning.pytorch import Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from lightning_dynamical import data as datasets
from lightning_dynamical import models, records
from lightning_dynamical.batches import batch_inputs, batch_size, batch_targets, forward_logits
from lightning_dynamical.callback import ActiveLearningLoop
from lightning_dynamical.clock import RoundClock
from lightning_dynamical.module import Classifier
from lightning_dynamical.pool import ActiveLearningDataModule
from lightning_dynamical.splits import DatasetSplits, dataset_size
from lightning_dynamical.stopping import GradientNormDecay, StabilizingPredictions, StoppingCriterion, ValidationPlateau
from lightning_dynamical.strategies.albl import ALBL
from lightning_dynamical.strategies.badge import BADGE
from lightning_dynamical.strategies.bald import BALD
from lightning_dynamical.strategies.base import Strategy
from lightning_dynamical.strategies.coreset import Coreset
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.random import Random
from lightning_dynamical.strategies.uncertainty import Entropy, LeastConfidence, Margin

RESULT_FIELDS = ("strategy", "seed", "round", "labeled", "test_acc", "train_loss", "train_acc", "stopped_by",
                 "score_seconds", "wall_seconds")
TIMING_FIELDS = ("score_seconds", "wall_seconds")

STRATEGIES: dict[str, Callable[[int], Strategy]] = {
    "random": lambda seed: Random(seed=seed),
    "entropy": lambda seed: Entropy(),
    "margin": lambda seed: Margin(),
    "least_confidence": lambda seed: LeastConfidence(),
    "bald": lambda seed: BALD(seed=seed),
    "badge": lambda seed: BADGE(seed=seed),
    "coreset": lambda seed: Coreset(seed=seed),
    "albl": lambda seed: ALBL(seed=seed),
    "dynamical": lambda seed: DynamicAL(gamma=2.0),
    "dynamical_gamma0": lambda seed: DynamicAL(gamma=0.0),
    "dynamical_gamma1": lambda seed: DynamicAL(gamma=1.0),
    "dynamical_inf": lambda seed: DynamicAL(gamma=math.inf),
    "dynamical_greedy4": lambda seed: DynamicAL(gamma=2.0, greedy_chunks=4),
    "dynamical_last_layer": lambda seed: DynamicAL(gamma=2.0, params="last_layer"),
}


# ---- data sets and networks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """How a data set is benchmarked: the DataModule and network its config (``configs/<config>``) names, with
    the same options; ``tests/test_bench.py`` checks that each preset and its config agree.

    ``data`` builds the DataModule from the bench arguments (only its :meth:`build_splits` is used: the bench
    makes its own labeled/unlabeled split per seed); ``net`` takes ``(num_classes, image_size)``.
    """

    data: Callable[[argparse.Namespace], datasets.NamedDataModule]
    net: Callable[[int, int], nn.Module]
    model: str
    config: str
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    eval_batch_size: int = 512
    cache: bool = False
    """Decode the evaluation data once into tensors (small images; the augmented training view stays lazy)."""
    augments: bool = False
    """The DataModule takes ``augment`` (``--augment/--no-augment``; its own default otherwise)."""


def _augment(args: argparse.Namespace) -> dict[str, bool]:
    return {} if getattr(args, "augment", None) is None else {"augment": args.augment}


def _digits(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.DigitsDataModule()


def _mnist(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.MNISTDataModule(root=args.root, **_augment(args))


def _cifar10(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.CIFAR10DataModule(root=args.root, **_augment(args))


def _svhn(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.SVHNDataModule(root=args.root, **_augment(args))


def _caltech101(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.Caltech101DataModule(root=args.root, image_size=args.image_size, **_augment(args))


def _image_folder(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.ImageFolderDataModule(root=args.root, image_size=args.image_size, **_augment(args))


AG_NEWS_POOL, AG_NEWS_VOCAB, AG_NEWS_LENGTH = 2000, 8000, 64
"""AG News as ``configs/ag_news.yaml`` has it: pool items, vocabulary size (the network's too), tokens per item."""


def _ag_news(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.AGNewsDataModule(root=args.root, pool_size=AG_NEWS_POOL, test_size=1000,
                                     vocab_size=AG_NEWS_VOCAB, max_length=AG_NEWS_LENGTH)


def _resnet18(num_classes: int, image_size: int) -> nn.Module:
    return models.resnet18(num_classes, in_channels=3, cifar_stem=image_size <= 64)


def _cifar_cnn(num_classes: int, image_size: int) -> nn.Module:
    return models.CifarCNN(num_classes, in_channels=3, width=32)


def _digits_cnn(num_classes: int, image_size: int) -> nn.Module:
    return models.DigitsCNN(num_classes, dropout=0.25)


def _lenet(num_classes: int, image_size: int) -> nn.Module:
    return models.LeNet(num_classes, in_channels=1, dropout=0.25)


def _vgg11(num_classes: int, image_size: int) -> nn.Module:
    return models.vgg11(num_classes, in_channels=3, dropout=0.0)


def _text_transformer(num_classes: int, image_size: int) -> nn.Module:
    return models.TextTransformer(AG_NEWS_VOCAB, num_classes, max_length=AG_NEWS_LENGTH, dim=64, depth=2, heads=4,
                                  dropout=0.1)


PRESETS: dict[str, Preset] = {
    "digits": Preset(_digits, _digits_cnn, "DigitsCNN", "digits.yaml", lr=2e-3, batch_size=32, eval_batch_size=256),
    "mnist": Preset(_mnist, _lenet, "LeNet (conv16-conv32, dropout, linear)", "mnist_cnn.yaml", lr=2e-3,
                    batch_size=32, eval_batch_size=1024, cache=True, augments=True),
    "cifar10": Preset(_cifar10, _cifar_cnn, "CifarCNN (width 32)", "cifar10_cnn.yaml", weight_decay=5e-4,
                      augments=True),
    "cifar10_resnet18": Preset(_cifar10, _resnet18, "ResNet-18 (CIFAR stem)", "cifar10_resnet18.yaml",
                               optimizer="sgd", lr=0.02, weight_decay=5e-4, batch_size=128, augments=True),
    "svhn": Preset(_svhn, _vgg11, "VGG-11", "svhn_vgg11.yaml", optimizer="sgd", lr=0.01, weight_decay=5e-4,
                   batch_size=128, augments=True),
    "caltech101": Preset(_caltech101, _resnet18, "ResNet-18", "caltech101_resnet18.yaml", optimizer="sgd", lr=0.02,
                         weight_decay=5e-4, eval_batch_size=256, augments=True),
    "image_folder": Preset(_image_folder, _resnet18, "ResNet-18", "image_folder.yaml", optimizer="sgd", lr=0.02,
                           weight_decay=5e-4, eval_batch_size=256, augments=True),
    "ag_news": Preset(_ag_news, _text_transformer, "TextTransformer (dim 64, 2 blocks, 4 heads)", "ag_news.yaml",
                      weight_decay=1e-4, batch_size=32, eval_batch_size=256),
}


def load_splits(args: argparse.Namespace) -> DatasetSplits:
    """The preset's splits, the pool cut to a seeded ``pool_limit`` samples (the same for every run)."""
    preset = PRESETS[args.data]
    splits = preset.data(args).build_splits()
    if args.pool_limit is not None and args.pool_limit < dataset_size(splits.pool):
        perm = torch.randperm(dataset_size(splits.pool), generator=torch.Generator().manual_seed(0))
        keep = perm[: args.pool_limit].sort().values.tolist()
        splits = DatasetSplits(Subset(splits.pool, keep), Subset(splits.pool_eval, keep), splits.val, splits.test,
                               splits.num_classes)
    if not preset.cache:
        return splits
    pool_eval = materialize(splits.pool_eval)
    pool = pool_eval if splits.pool is splits.pool_eval or _same_view(splits.pool, splits.pool_eval) else splits.pool
    return DatasetSplits(pool, pool_eval, materialize(splits.val), materialize(splits.test), splits.num_classes)


def _same_view(a: Dataset, b: Dataset) -> bool:
    """Two subsets of one dataset at the same indices (the pool and pool_eval of a limited pool)."""
    return isinstance(a, Subset) and isinstance(b, Subset) and a.dataset is b.dataset and a.indices == b.indices


@overload
def materialize(dataset: Dataset) -> Dataset: ...
@overload
def materialize(dataset: None) -> None: ...
def materialize(dataset: Dataset | None) -> Dataset | None:
    """``(input, target)`` samples decoded once into a ``TensorDataset`` (same values, no per-item work)."""
    if dataset is None or isinstance(dataset, TensorDataset):
        return dataset
    inputs, targets = [], []
    for batch in DataLoader(dataset, batch_size=1024):
        inputs.append(batch[0])
        targets.append(batch[1])
    return TensorDataset(torch.cat(inputs), torch.cat(targets))


# ---- one run -----------------------------------------------------------------------------------------------
def run_one(args: argparse.Namespace, splits: DatasetSplits, strategy: str, seed: int, bar: Any) -> list[dict]:
    """One seeded active-learning run; its rows for ``results.csv``."""
    preset = PRESETS[args.data]
    seed_everything(seed, verbose=False)
    dm = ActiveLearningDataModule(splits.pool, splits.val, splits.test, splits.pool_eval,
                                  initial_size=args.initial_size, balanced=args.balanced, val_size=args.val_size,
                                  batch_size=preset.batch_size, eval_batch_size=preset.eval_batch_size, seed=seed)
    model = Classifier(preset.net(splits.num_classes, args.image_size), num_classes=splits.num_classes,
                       optimizer=preset.optimizer, lr=preset.lr, weight_decay=preset.weight_decay)
    run_dir = str(Path(args.out) / "runs" / f"{strategy}_seed{seed}")
    chosen = STRATEGIES[strategy](seed)
    loop = ActiveLearningLoop(chosen, query_size=args.query_size, rounds=args.rounds,
                              patience=args.patience, train_acc_threshold=args.train_acc_threshold,
                              max_epochs_per_round=args.max_epochs_per_round, pool_subset=args.pool_subset,
                              smoothing=args.smoothing, seed=seed, dirpath=run_dir, save_round_checkpoints=False,
                              stop=bench_criteria(chosen, splits.val is not None or args.val_size > 0),
                              stop_mode="record", verbose=False)
    clock = RoundClock(loop, bar)
    trainer = Trainer(max_epochs=-1, accelerator=args.accelerator, devices=1, deterministic=True, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=run_dir, callbacks=[loop, clock])
    trainer.fit(model, datamodule=dm)
    return [{"strategy": strategy, "seed": seed, "round": r["round"], "labeled": r["labeled"],
             "test_acc": r["test_acc"], "train_loss": r["train_loss"], "train_acc": r["train_acc"],
             "stopped_by": r["stopped_by"], "score_seconds": r["score_seconds"], "wall_seconds": wall}
            for r, wall in zip(loop.history, clock.times)]


def bench_criteria(strategy: Strategy, has_val: bool) -> list[StoppingCriterion]:
    """The stopping criteria every run records (never enforced): stabilising predictions, a validation
    plateau when there is a validation split, and the gradient-norm rule for dynamicAL."""
    criteria: list[StoppingCriterion] = [StabilizingPredictions(threshold=0.99, rounds=2, stop_set_size=1000)]
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


# ---- outputs -----------------------------------------------------------------------------------------------
def write_results(path: Path, rows: Sequence[dict]) -> None:
    records.atomic_write_csv(str(path), RESULT_FIELDS, rows, extras="raise")


def read_results(path: str | Path) -> list[dict]:
    """``results.csv`` back with numbers parsed."""
    with open(path) as f:
        return [{"strategy": r["strategy"], "seed": int(r["seed"]), "round": int(r["round"]),
                 "labeled": int(r["labeled"]), "test_acc": float(r["test_acc"]),
                 "train_loss": float(r["train_loss"]), "train_acc": float(r["train_acc"]),
                 "stopped_by": r["stopped_by"], "score_seconds": float(r["score_seconds"]),
                 "wall_seconds": float(r["wall_seconds"])}
                for r in csv.DictReader(f)]


@dataclass
class Curve:
    """One strategy's learning curve over seeds: per round the labeled size and accuracy mean and std."""

    labeled: list[float]
    mean: list[float]
    std: list[float]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def by_strategy(rows: Sequence[dict]) -> dict[str, dict[int, list[dict]]]:
    """``{strategy: {seed: rows in round order}}``, strategies in first-seen order."""
    out: dict[str, dict[int, list[dict]]] = {}
    for r in rows:
        out.setdefault(r["strategy"], {}).setdefault(r["seed"], []).append(r)
    for seeds in out.values():
        for runs in seeds.values():
            runs.sort(key=lambda r: r["round"])
    return out


def curves(rows: Sequence[dict]) -> dict[str, Curve]:
    result = {}
    for strategy, seeds in by_strategy(rows).items():
        n_rounds = min(len(runs) for runs in seeds.values())
        per_round = [[runs[k] for runs in seeds.values()] for k in range(n_rounds)]
        stats = [mean_std([r["test_acc"] for r in rs]) for rs in per_round]
        result[strategy] = Curve([statistics.fmean(r["labeled"] for r in rs) for rs in per_round],
                                 [m for m, _ in stats], [s for _, s in stats])
    return result


def aulc(labeled: Sequence[float], accuracy: Sequence[float]) -> float:
    """Trapezoidal area under accuracy vs labeled size, over the labeled range: a mean accuracy in [0, 1]."""
    if len(labeled) < 2 or labeled[-1] == labeled[0]:
        return float(accuracy[0])
    area = sum((labeled[k + 1] - labeled[k]) * (accuracy[k] + accuracy[k + 1]) / 2 for k in range(len(labeled) - 1))
    return area / (labeled[-1] - labeled[0])


def plot_curves(rows: Sequence[dict], path: Path, title: str) -> None:
    """Accuracy (%) vs labeled-set size: mean line and a mean +/- std band per strategy (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for strategy, c in curves(rows).items():
        mean = [100 * m for m in c.mean]
        low = [100 * (m - s) for m, s in zip(c.mean, c.std)]
        high = [100 * (m + s) for m, s in zip(c.mean, c.std)]
        (line,) = ax.plot(c.labeled, mean, marker="o", markersize=3, label=strategy)
        ax.fill_between(c.labeled, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def spread(mean: float, std: float, n: int, digits: int) -> str:
    """``mean ± std``; with one seed there is no spread to report: ``mean ± n/a``."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f} ± n/a"


def run_aulc(runs: Sequence[dict]) -> float:
    return aulc([r["labeled"] for r in runs], [r["test_acc"] for r in runs])


def summary_markdown(rows: Sequence[dict], title: str, protocol: str,
                     criteria: dict[str, list[str]] | None = None) -> str:
    """Mean +/- std accuracy per round (best in bold), AULC, final accuracy and times per strategy, the paired
    comparison with Random and Entropy, and where each recorded stopping criterion would have stopped
    (``criteria``: the names recorded per strategy, so that criteria that never fired are listed too)."""
    groups, lines = by_strategy(rows), [f"# {title}", "", protocol, ""]
    strategies = list(groups)
    curve = curves(rows)
    n_seeds = max(len(seeds) for seeds in groups.values())
    lines += [f"## Test accuracy (%), mean ± std over {n_seeds} seed{'s' if n_seeds > 1 else ''}", "",
              "| round | labeled | " + " | ".join(strategies) + " |", "|---" * (len(strategies) + 2) + "|"]
    for k in range(max(len(c.mean) for c in curve.values())):
        present = {s: c for s, c in curve.items() if k < len(c.mean)}
        best = max(c.mean[k] for c in present.values())
        cells = []
        for s, c in curve.items():
            if s not in present:
                cells.append("")
                continue
            text = spread(100 * c.mean[k], 100 * c.std[k], len(groups[s]), 2)
            cells.append(f"**{text}**" if c.mean[k] == best else text)
        labeled = round(statistics.fmean(c.labeled[k] for c in present.values()))
        lines.append(f"| {k} | {labeled} | " + " | ".join(cells) + " |")
    lines += ["", "## Per strategy", "",
              "| strategy | AULC (%) | final accuracy (%) | wall s / run | scoring s / run |", "|---|---|---|---|---|"]
    for strategy, seeds in groups.items():
        runs = list(seeds.values())
        n = len(runs)
        area = mean_std([100 * run_aulc(rs) for rs in runs])
        final = mean_std([100 * rs[-1]["test_acc"] for rs in runs])
        wall = mean_std([rs[-1]["wall_seconds"] for rs in runs])
        scoring = mean_std([sum(r["score_seconds"] for r in rs) for rs in runs])
        lines.append(f"| {strategy} | {spread(*area, n, 2)} | {spread(*final, n, 2)} | {spread(*wall, n, 1)} | "
                     f"{spread(*scoring, n, 2)} |")
    lines += ["", "AULC: trapezoidal area under test accuracy vs labeled-set size divided by the labeled range "
              "(a mean accuracy). ± is the sample standard deviation over seeds (n/a with one seed). Wall time "
              "covers a whole run (training, test evaluation, scoring); scoring time sums the strategy's pool "
              "scoring over rounds.", ""]
    lines += paired_markdown(groups) + stopping_markdown(groups, criteria or {})
    return "\n".join(lines)


def paired_markdown(groups: dict[str, dict[int, list[dict]]]) -> list[str]:
    """Each strategy against Random and Entropy on the same seeds (against the first strategy when neither ran,
    e.g. a table of dynamicAL variants): per-seed AULC differences, seeds won."""
    if len(groups) < 2:
        return []
    references: list[str] = [r for r in ("random", "entropy") if r in groups] or [next(iter(groups))]
    header = "| strategy | " + " | ".join(f"ΔAULC vs {r} (pp) | seeds won vs {r}" for r in references) + " |"
    lines = ["## Paired comparison (metric: AULC, fixed before running)", "", header,
             "|---" * (1 + 2 * len(references)) + "|"]
    for strategy, seeds in groups.items():
        cells = []
        for ref in references:
            common = sorted(set(seeds) & set(groups[ref]))
            if strategy == ref or not common:
                cells += ["", ""]
                continue
            diffs = [100 * (run_aulc(seeds[s]) - run_aulc(groups[ref][s])) for s in common]
            m, sd = mean_std(diffs)
            cells += [f"{'+' if m >= 0 else ''}{spread(m, sd, len(diffs), 2)}",
                      f"{sum(d > 0 for d in diffs)}/{len(diffs)}"]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    lines += ["", "ΔAULC: per seed, the strategy's AULC minus the reference's on the same seed (same initial set); "
              "mean ± std of those differences in percentage points. Seeds won: seeds with a positive difference.",
              ""]
    return lines


def stopping_markdown(groups: dict[str, dict[int, list[dict]]], criteria: dict[str, list[str]]) -> list[str]:
    """Per strategy and recorded criterion: in how many seeds it fired, the first round it fired, the labeled
    size and test accuracy there, against the final accuracy (criteria are recorded, never enforced)."""
    lines = ["## Where each stopping criterion would have stopped", "",
             "| strategy | criterion | fired in seeds | round | labeled | accuracy there (%) | final accuracy (%) |",
             "|---|---|---|---|---|---|---|"]
    found = False
    for strategy, seeds in groups.items():
        names = list(criteria.get(strategy, []))
        for runs in seeds.values():
            for r in runs:
                names += [n for n in str(r.get("stopped_by") or "").split(";") if n and n not in names]
        for name in names:
            found = True
            first = [next((r for r in runs if name in str(r.get("stopped_by") or "").split(";")), None)
                     for runs in seeds.values()]
            fired = [(r, runs) for r, runs in zip(first, seeds.values()) if r is not None]
            n = len(fired)
            if not n:
                lines.append(f"| {strategy} | {name} | 0/{len(seeds)} | did not fire | | | |")
                continue
            rnd = mean_std([r["round"] for r, _ in fired])
            lab = mean_std([r["labeled"] for r, _ in fired])
            acc = mean_std([100 * r["test_acc"] for r, _ in fired])
            final = mean_std([100 * runs[-1]["test_acc"] for _, runs in fired])
            lines.append(f"| {strategy} | {name} | {n}/{len(seeds)} | {spread(*rnd, n, 1)} | {spread(*lab, n, 0)} | "
                         f"{spread(*acc, n, 2)} | {spread(*final, n, 2)} |")
    if not found:
        lines.append("| (no criteria recorded) | | | | | | |")
    lines += ["", "Means over the seeds where the criterion fired; final accuracy is of those same runs.", ""]
    return lines


def write_outputs(rows: Sequence[dict], out: Path, args: argparse.Namespace, command: str) -> None:
    """``learning_curve.png`` and ``summary.md`` from the rows (``results.csv`` is written as runs finish)."""
    n, preset = len(args.seeds), PRESETS[args.data]
    title = f"{args.data}: M={args.initial_size}, b={args.query_size}, R={args.rounds}, {n} seeds"
    plot_curves(rows, out / "learning_curve.png", title)
    pool = f"pool limited to {args.pool_limit}" if args.pool_limit else "full pool"
    subset = f", {args.pool_subset} pool samples scored per round" if args.pool_subset else ""
    named = f" (protocol `{args.protocol}`)" if args.protocol else ""
    val = f", validation split of {args.val_size} pool samples" if args.val_size else ""
    criteria = ", ".join(repr(c) for c in bench_criteria(DynamicAL(), getattr(args, "has_val", args.val_size > 0)))

    protocol = (f"Command: `{command}`{named}\n\nProtocol: initial labeled set M={args.initial_size}"
                f"{' (class-balanced)' if args.balanced else ''}, query size b={args.query_size}, "
                f"R={args.rounds} rounds, at most {args.max_epochs_per_round} epochs per round (patience "
                f"{args.patience} on the train loss averaged over {args.smoothing} epochs, train accuracy threshold "
                f"{args.train_acc_threshold}), {pool}{subset}{val}; seeds "
                f"{', '.join(map(str, args.seeds))}. Model: {preset.model}, {preset.optimizer} lr {preset.lr}, "
                f"weight decay {preset.weight_decay}, batch {preset.batch_size}; {args.accelerator}, "
                f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads. Stopping criteria recorded "
                f"(not enforced): {criteria} "
                "(GradientNormDecay for dynamicAL strategies only).")
    has_val = getattr(args, "has_val", args.val_size > 0)
    recorded = {s: [c.name for c in bench_criteria(STRATEGIES[s](0), has_val)] for s in args.strategies}
    summary = summary_markdown(rows, f"Active-learning benchmark: {args.data}", protocol, recorded)
    records.atomic_write_text(str(out / "summary.md"), summary)


# ---- protocols and run-time estimate ---------------------------------------------------------------------
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
    """Rough pool-scoring time: gradient-based strategies ~ a training step per sample (the README's measured
    engine throughput is 0.76-0.89 of a batched forward+backward), BALD 20 forwards, others one forward."""
    if strategy == "random":
        return 0.0
    if strategy.startswith("dynamical") or strategy in ("badge", "albl"):
        return 1.3 * n * train
    return (20 if strategy == "bald" else 1) * n * evaluate


def estimate_seconds(args: argparse.Namespace, splits: DatasetSplits) -> float:
    """Upper bound on one bench's wall time: every round trains ``max_epochs_per_round`` epochs."""
    train, evaluate = per_sample_seconds(args, splits)
    pool = min(dataset_size(splits.pool), args.pool_limit or dataset_size(splits.pool))
    pool -= int(args.val_size) if isinstance(args.val_size, int) else int(args.val_size * pool)
    test = dataset_size(splits.test) if splits.test is not None else 0
    total = 0.0
    for strategy in args.strategies:
        for k in range(args.rounds + 1):
            labeled = args.initial_size + k * args.query_size
            total += args.max_epochs_per_round * labeled * (train + evaluate) + (test + labeled) * evaluate
            if k < args.rounds:
                total += scoring_seconds(strategy, pool - labeled, train, evaluate)
    return total * len(args.seeds)


def duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


# ---- command line ------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _strategy_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    return names


def _data_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in PRESETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown data sets {unknown}; choose from {', '.join(PRESETS)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lightning-dynamical-bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                        help="named defaults (explicit options override them): "
                             + "; ".join(f"{k}: {p.about}" for k, p in PROTOCOLS.items()))
    parser.add_argument("--data", choices=list(PRESETS), default="digits")
    parser.add_argument("--datasets", type=_data_list, default=None,
                        help="comma-separated data sets of a grid (default: the protocol's, else --data)")
    parser.add_argument("--root", default="data", help="data root (not used by digits)")
    parser.add_argument("--strategies", type=_strategy_list,
                        default=_strategy_list("random,entropy,margin,badge,coreset,dynamical"),
                        help=f"comma-separated, from: {', '.join(STRATEGIES)}")
    parser.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="comma-separated")
    parser.add_argument("--initial-size", type=int, default=100, help="M")
    parser.add_argument("--balanced", action="store_true", help="class-balanced initial set")
    parser.add_argument("--query-size", type=int, default=50, help="b")
    parser.add_argument("--query-sizes", type=_int_list, default=None,
                        help="comma-separated query sizes of a grid (default: the protocol's, else --query-size)")
    parser.add_argument("--rounds", type=int, default=4, help="R")
    parser.add_argument("--max-epochs-per-round", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--smoothing", type=int, default=5, help="epochs averaged into the plateau test's loss")
    parser.add_argument("--train-acc-threshold", type=float, default=0.99)
    parser.add_argument("--val-size", type=int, default=0,
                        help="hold out this many pool samples as a validation split (for the val-plateau criterion)")
    parser.add_argument("--pool-limit", type=int, default=None, help="keep a seeded subset of the pool")
    parser.add_argument("--pool-subset", type=int, default=None, help="score this many pool samples per round")
    parser.add_argument("--image-size", type=int, default=224, help="caltech101 and image_folder")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="augment the training view (image data sets; default: the DataModule's own default)")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (float rounding, and so some selections, depend on it: the same seeds "
                             "give the same results.csv at the same thread count); default: torch's")
    parser.add_argument("--estimate-only", action="store_true", help="print the run-time estimate and exit")
    parser.add_argument("--out", default="bench_results")
    known, _ = parser.parse_known_args(argv)
    if known.protocol:
        protocol = PROTOCOLS[known.protocol]
        parser.set_defaults(**protocol.defaults, datasets=list(protocol.datasets) or None,
                            query_sizes=list(protocol.query_sizes) or None)
    args = parser.parse_args(argv)
    if not args.seeds:
        parser.error("--seeds needs at least one seed")
    for name in ("initial_size", "query_size", "rounds", "max_epochs_per_round", "patience", "smoothing"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive int, got {getattr(args, name)}")
    if args.query_sizes is not None and (not args.query_sizes or min(args.query_sizes) <= 0):
        parser.error(f"--query-sizes must be positive ints, got {args.query_sizes}")
    if args.augment is not None:
        plain = [d for d in (args.datasets or [args.data]) if not PRESETS[d].augments]
        if plain:
            parser.error(f"--augment/--no-augment: {', '.join(plain)} has no augmentation; image data sets with "
                         f"one: {', '.join(k for k, p in PRESETS.items() if p.augments)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be a positive int, got {args.threads}")
    if args.val_size < 0:
        parser.error(f"--val-size must be >= 0, got {args.val_size}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the bench (or each bench of a protocol's grid); write ``results.csv``, ``learning_curve.png`` and
    ``summary.md`` under ``--out`` (``--out/<data>_b<b>`` for a grid)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        _run(args, argv)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, argv: list[str]) -> None:
    """The benches of ``args`` (the paper protocol's run-time estimate printed first)."""
    benches = grid(args)
    command = shlex.join(["lightning-dynamical-bench", *argv])
    if args.estimate_only or args.protocol == "paper":
        total = 0.0
        for bench in benches:
            seconds = estimate_seconds(bench, load_splits(bench))
            total += seconds
            print(f"estimate {bench.data} b={bench.query_size}: at most {duration(seconds)} "
                  f"({len(bench.strategies)} strategies x {len(bench.seeds)} seeds x {bench.rounds + 1} rounds)")
        print(f"estimated run time: at most {duration(total)} on this machine ({args.accelerator}), counting "
              f"{args.max_epochs_per_round} epochs every round from measured per-sample step times; rounds that "
              "converge earlier take less", flush=True)
        if args.estimate_only:
            return
    for bench in benches:
        out = Path(bench.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = run_bench(bench)
        write_outputs(rows, out, bench, command)
        print(f"wrote {out / 'results.csv'}, {out / 'learning_curve.png'} and {out / 'summary.md'}")


if __name__ == "__main__":
    main()
