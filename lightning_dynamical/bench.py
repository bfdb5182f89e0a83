"""``lightning-dynamical-bench``: strategies x seeds under one protocol (initial M, query size b, rounds R).

Each run is one ``Trainer`` with an :class:`ActiveLearningLoop`, seeded with ``seed_everything(seed)`` and
deterministic on CPU. Writes ``results.csv`` (one row per run and round), ``learning_curve.png`` (mean and
std band per strategy) and ``summary.md`` (accuracy per round, area under the learning curve, times).
Same seeds, same CSV, except the timing columns ``score_seconds`` and ``wall_seconds`` (the last two).
"""

from __future__ import annotations

import argparse
import csv
import io
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
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from lightning_dynamical import records
from lightning_dynamical.callback import ActiveLearningLoop
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.module import Classifier
from lightning_dynamical.pool import ActiveLearningDataModule
from lightning_dynamical.strategies.albl import ALBL
from lightning_dynamical.strategies.badge import BADGE
from lightning_dynamical.strategies.bald import BALD
from lightning_dynamical.strategies.base import Strategy
from lightning_dynamical.strategies.coreset import Coreset
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.random import Random
from lightning_dynamical.strategies.uncertainty import Entropy, LeastConfidence, Margin

RESULT_FIELDS = ("strategy", "seed", "round", "labeled", "test_acc", "score_seconds", "wall_seconds")
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
}


# ---- data sets and networks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """How a data set is benchmarked: its splits, its network ``(num_classes, image_size)`` and optimiser."""

    splits: Callable[[argparse.Namespace], DatasetSplits]
    net: Callable[[int, int], nn.Module]
    model: str
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    eval_batch_size: int = 512
    cache: bool = False
    """Decode the evaluation data once into tensors (small images without augmentation only)."""


def _digits(args: argparse.Namespace) -> DatasetSplits:
    from lightning_dynamical.data.digits import build_digits

    return build_digits()


def _mnist(args: argparse.Namespace) -> DatasetSplits:
    from lightning_dynamical.data.mnist import build_mnist

    return build_mnist(args.root)


def _cifar10(args: argparse.Namespace) -> DatasetSplits:
    from lightning_dynamical.data.cifar10 import build_cifar10

    return build_cifar10(args.root)


def _svhn(args: argparse.Namespace) -> DatasetSplits:
    from lightning_dynamical.data.svhn import build_svhn

    return build_svhn(args.root)


def _caltech101(args: argparse.Namespace) -> DatasetSplits:
    from lightning_dynamical.data.caltech101 import build_caltech101

    return build_caltech101(args.root, image_size=args.image_size)


def _image_folder(args: argparse.Namespace) -> DatasetSplits:
    from lightning_dynamical.data.image_folder import build_image_folder

    return build_image_folder(args.root, image_size=args.image_size)


def _resnet18(num_classes: int, image_size: int) -> nn.Module:
    from lightning_dynamical.models import resnet18

    return resnet18(num_classes, in_channels=3, cifar_stem=image_size <= 64)


def _cifar_cnn(num_classes: int, image_size: int) -> nn.Module:
    from lightning_dynamical.models import CifarCNN

    return CifarCNN(num_classes, in_channels=3, width=32)


def _digits_cnn(num_classes: int, image_size: int) -> nn.Module:
    from lightning_dynamical.models import DigitsCNN

    return DigitsCNN(num_classes)


def _lenet(num_classes: int, image_size: int) -> nn.Module:
    """LeNet-style CNN for 28x28 grey digits: learns from a hundred samples and scores fast on a CPU."""
    return nn.Sequential(nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 4 * 4, num_classes))


def _vgg11(num_classes: int, image_size: int) -> nn.Module:
    from lightning_dynamical.models import vgg11

    return vgg11(num_classes, in_channels=3)


PRESETS: dict[str, Preset] = {
    "digits": Preset(_digits, _digits_cnn, "DigitsCNN", lr=2e-3, batch_size=32),
    "mnist": Preset(_mnist, _lenet, "LeNet-style CNN (conv16-conv32, dropout, linear)", lr=2e-3, batch_size=32,
                    eval_batch_size=1024, cache=True),
    "cifar10": Preset(_cifar10, _cifar_cnn, "CifarCNN (width 32)", weight_decay=5e-4),
    "svhn": Preset(_svhn, _vgg11, "VGG-11", optimizer="sgd", lr=0.01, weight_decay=5e-4, batch_size=128),
    "caltech101": Preset(_caltech101, _resnet18, "ResNet-18", optimizer="sgd", lr=0.02, weight_decay=5e-4,
                         eval_batch_size=256),
    "image_folder": Preset(_image_folder, _resnet18, "ResNet-18", optimizer="sgd", lr=0.02, weight_decay=5e-4,
                           eval_batch_size=256),
}


def load_splits(args: argparse.Namespace) -> DatasetSplits:
    """The preset's splits, the pool cut to a seeded ``pool_limit`` samples (the same for every run)."""
    preset = PRESETS[args.data]
    splits = preset.splits(args)
    if args.pool_limit is not None and args.pool_limit < len(splits.pool):
        keep = torch.randperm(len(splits.pool), generator=torch.Generator().manual_seed(0))[: args.pool_limit]
        keep = keep.sort().values.tolist()
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
class RoundClock(Callback):
    """Wall seconds from the start of ``fit`` to the end of each round; ticks the progress bar per round."""

    def __init__(self, loop: ActiveLearningLoop, bar: Any) -> None:
        self.loop = loop
        self.bar = bar
        self.times: list[float] = []
        self._start = time.perf_counter()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        while len(self.times) < len(self.loop.history):
            row = self.loop.history[len(self.times)]
            self.times.append(round(time.perf_counter() - self._start, 3))
            self.bar.set_postfix(labeled=row["labeled"], acc=f"{row['test_acc']:.4f}")
            self.bar.update(1)


def run_one(args: argparse.Namespace, splits: DatasetSplits, strategy: str, seed: int, bar: Any) -> list[dict]:
    """One seeded active-learning run; its rows for ``results.csv``."""
    preset = PRESETS[args.data]
    seed_everything(seed, verbose=False)
    dm = ActiveLearningDataModule(splits.pool, splits.val, splits.test, splits.pool_eval,
                                  initial_size=args.initial_size, balanced=args.balanced,
                                  batch_size=preset.batch_size, eval_batch_size=preset.eval_batch_size, seed=seed)
    model = Classifier(preset.net(splits.num_classes, args.image_size), num_classes=splits.num_classes,
                       optimizer=preset.optimizer, lr=preset.lr, weight_decay=preset.weight_decay)
    run_dir = str(Path(args.out) / "runs" / f"{strategy}_seed{seed}")
    loop = ActiveLearningLoop(STRATEGIES[strategy](seed), query_size=args.query_size, rounds=args.rounds,
                              patience=args.patience, train_acc_threshold=args.train_acc_threshold,
                              max_epochs_per_round=args.max_epochs_per_round, pool_subset=args.pool_subset,
                              seed=seed, dirpath=run_dir, save_round_checkpoints=False, verbose=False)
    clock = RoundClock(loop, bar)
    trainer = Trainer(max_epochs=-1, accelerator=args.accelerator, devices=1, deterministic=True, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=run_dir, callbacks=[loop, clock])
    trainer.fit(model, datamodule=dm)
    return [{"strategy": strategy, "seed": seed, "round": r["round"], "labeled": r["labeled"],
             "test_acc": r["test_acc"], "score_seconds": r["score_seconds"], "wall_seconds": wall}
            for r, wall in zip(loop.history, clock.times)]


def run_bench(args: argparse.Namespace) -> list[dict]:
    """Every strategy x seed, ``results.csv`` rewritten after each run (an interrupted bench keeps its rows)."""
    splits = load_splits(args)
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
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RESULT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    records.atomic_write_text(str(path), out.getvalue())


def read_results(path: str | Path) -> list[dict]:
    """``results.csv`` back with numbers parsed."""
    with open(path) as f:
        return [{"strategy": r["strategy"], "seed": int(r["seed"]), "round": int(r["round"]),
                 "labeled": int(r["labeled"]), "test_acc": float(r["test_acc"]),
                 "score_seconds": float(r["score_seconds"]), "wall_seconds": float(r["wall_seconds"])}
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


def summary_markdown(rows: Sequence[dict], title: str, protocol: str) -> str:
    """Mean +/- std accuracy per round (best in bold), then AULC, final accuracy and times per strategy."""
    groups, lines = by_strategy(rows), [f"# {title}", "", protocol, ""]
    strategies = list(groups)
    curve = curves(rows)
    n_seeds = max(len(seeds) for seeds in groups.values())
    lines += [f"## Test accuracy (%), mean ± std over {n_seeds} seeds", "",
              "| round | labeled | " + " | ".join(strategies) + " |", "|---" * (len(strategies) + 2) + "|"]
    for k in range(max(len(c.mean) for c in curve.values())):
        present = {s: c for s, c in curve.items() if k < len(c.mean)}
        best = max(c.mean[k] for c in present.values())
        cells = [(f"**{100 * c.mean[k]:.2f} ± {100 * c.std[k]:.2f}**" if c.mean[k] == best else
                  f"{100 * c.mean[k]:.2f} ± {100 * c.std[k]:.2f}") if s in present else "" for s, c in curve.items()]
        labeled = round(statistics.fmean(c.labeled[k] for c in present.values()))
        lines.append(f"| {k} | {labeled} | " + " | ".join(cells) + " |")
    lines += ["", "## Per strategy", "",
              "| strategy | AULC (%) | final accuracy (%) | wall s / run | scoring s / run |", "|---|---|---|---|---|"]
    for strategy, seeds in groups.items():
        runs = list(seeds.values())
        area = mean_std([100 * aulc([r["labeled"] for r in rs], [r["test_acc"] for r in rs]) for rs in runs])
        final = mean_std([100 * rs[-1]["test_acc"] for rs in runs])
        wall = mean_std([rs[-1]["wall_seconds"] for rs in runs])
        scoring = mean_std([sum(r["score_seconds"] for r in rs) for rs in runs])
        lines.append(f"| {strategy} | {area[0]:.2f} ± {area[1]:.2f} | {final[0]:.2f} ± {final[1]:.2f} | "
                     f"{wall[0]:.1f} ± {wall[1]:.1f} | {scoring[0]:.2f} ± {scoring[1]:.2f} |")
    lines += ["", "AULC: trapezoidal area under test accuracy vs labeled-set size divided by the labeled range "
              "(a mean accuracy). ± is the sample standard deviation over seeds. Wall time covers a whole run "
              "(training, test evaluation, scoring); scoring time sums the strategy's pool scoring over rounds.", ""]
    return "\n".join(lines)


def write_outputs(rows: Sequence[dict], out: Path, args: argparse.Namespace, command: str) -> None:
    """``learning_curve.png`` and ``summary.md`` from the rows (``results.csv`` is written as runs finish)."""
    n, preset = len(args.seeds), PRESETS[args.data]
    title = f"{args.data}: M={args.initial_size}, b={args.query_size}, R={args.rounds}, {n} seeds"
    plot_curves(rows, out / "learning_curve.png", title)
    pool = f"pool limited to {args.pool_limit}" if args.pool_limit else "full pool"
    subset = f", {args.pool_subset} pool samples scored per round" if args.pool_subset else ""
    protocol = (f"Command: `{command}`\n\nProtocol: initial labeled set M={args.initial_size}"
                f"{' (class-balanced)' if args.balanced else ''}, query size b={args.query_size}, "
                f"R={args.rounds} rounds, at most {args.max_epochs_per_round} epochs per round (patience "
                f"{args.patience}, train accuracy threshold {args.train_acc_threshold}), {pool}{subset}; seeds "
                f"{', '.join(map(str, args.seeds))}. Model: {preset.model}, {preset.optimizer} lr {preset.lr}, "
                f"weight decay {preset.weight_decay}, batch {preset.batch_size}; {args.accelerator}, "
                f"torch {torch.__version__}.")
    summary = summary_markdown(rows, f"Active-learning benchmark: {args.data}", protocol)
    records.atomic_write_text(str(out / "summary.md"), summary)


# ---- command line ------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _strategy_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lightning-dynamical-bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", choices=list(PRESETS), default="digits")
    parser.add_argument("--root", default="data", help="data root (not used by digits)")
    parser.add_argument("--strategies", type=_strategy_list, default=_strategy_list("random,entropy,badge,coreset,"
                                                                                    "dynamical"),
                        help=f"comma-separated, from: {', '.join(STRATEGIES)}")
    parser.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="comma-separated")
    parser.add_argument("--initial-size", type=int, default=100, help="M")
    parser.add_argument("--balanced", action="store_true", help="class-balanced initial set")
    parser.add_argument("--query-size", type=int, default=50, help="b")
    parser.add_argument("--rounds", type=int, default=4, help="R")
    parser.add_argument("--max-epochs-per-round", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--train-acc-threshold", type=float, default=0.99)
    parser.add_argument("--pool-limit", type=int, default=None, help="keep a seeded subset of the pool")
    parser.add_argument("--pool-subset", type=int, default=None, help="score this many pool samples per round")
    parser.add_argument("--image-size", type=int, default=224, help="caltech101 and image_folder")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--out", default="bench_results")
    args = parser.parse_args(argv)
    if not args.seeds:
        parser.error("--seeds needs at least one seed")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the bench; write ``results.csv``, ``learning_curve.png`` and ``summary.md`` under ``--out``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = run_bench(args)
    write_outputs(rows, out, args, shlex.join(["lightning-dynamical-bench", *argv]))
    print(f"wrote {out / 'results.csv'}, {out / 'learning_curve.png'} and {out / 'summary.md'}")


if __name__ == "__main__":
    main()
