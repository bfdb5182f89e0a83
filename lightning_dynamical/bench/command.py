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
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from lightning_dynamical.bench.presets import PRESETS, STRATEGIES, load_splits
from lightning_dynamical.bench.protocols import (
    PROTOCOLS,
    TYPICAL_EPOCHS_PER_ROUND,
    duration,
    estimate_seconds,
    grid,
)
from lightning_dynamical.bench.report import write_outputs
from lightning_dynamical.bench.runs import read_results, run_bench


def _int_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _names(text: str, allowed: Iterable[str], what: str) -> list[str]:
    """Comma-separated names, each one of ``allowed`` (at least one)."""
    allowed = list(allowed)
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return names


def _strategy_list(text: str) -> list[str]:
    return _names(text, STRATEGIES, "strategies")


def _data_list(text: str) -> list[str]:
    return _names(text, PRESETS, "data sets")


def _optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "null") else float(text)


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
    parser.add_argument("--max-epochs-per-round", type=int, default=100,
                        help="cap on a round's epochs (a capped round is recorded as converged_by=max_epochs)")
    parser.add_argument("--patience", type=int, default=5, help="epochs of the relative plateau test")
    parser.add_argument("--smoothing", type=int, default=5, help="epochs averaged into the plateau test's loss")
    parser.add_argument("--rel-delta", type=float, default=0.05, help="relative improvement that counts")
    parser.add_argument("--min-delta", type=float, default=0.0, help="absolute improvement that counts")
    parser.add_argument("--train-acc-threshold", type=_optional_float, default=0.99,
                        help="labeled-set accuracy the fit test asks for ('none': no fit test)")
    parser.add_argument("--fit-epochs", type=int, default=5, help="epochs the accuracy must hold in a row")
    parser.add_argument("--loss-target", type=_optional_float, default=0.01,
                        help="a smoothed train loss at or below this counts as settled ('none': plateau only)")
    parser.add_argument("--fresh-optimizer", action="store_true",
                        help="a fresh optimizer state every round, weights kept (the authors' code re-creates Adam)")
    parser.add_argument("--imbalanced-pool", action="store_true",
                        help="subsample each class of the pool by the authors' ratios (10-class data sets; use with "
                             "--balanced for their class-balanced initial set)")
    parser.add_argument("--best-epoch-test-acc", action="store_true",
                        help="also record the best test accuracy over each round's epochs (selected on the test "
                             "set, as the authors report it: a separate column, never the bench's metric)")
    parser.add_argument("--trainer-seed-offset", type=int, default=0,
                        help="seed the trainer (weights, shuffles, dropout) with seed + this while the labeled split "
                             "keeps seed: two offsets of one strategy measure the noise floor")
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
    parser.add_argument("--from-results", action="store_true",
                        help="run nothing: rewrite learning_curve.png and summary.md from --out/results.csv (the "
                             "same command as the runs, plus this flag)")
    known, _ = parser.parse_known_args(argv)
    if known.protocol:
        protocol = PROTOCOLS[known.protocol]
        parser.set_defaults(**protocol.defaults, datasets=list(protocol.datasets) or None,
                            query_sizes=list(protocol.query_sizes) or None)
    args = parser.parse_args(argv)
    if not args.seeds:
        parser.error("--seeds needs at least one seed")
    for name in ("initial_size", "query_size", "rounds", "max_epochs_per_round", "patience", "smoothing", "fit_epochs"):
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


def _portable(argv: Iterable[str]) -> list[str]:
    """The command's arguments with absolute paths made relative to the working folder where they lie below
    its parent (``../shared/data``), else cut to their last part: a summary names no folder of one machine."""
    cwd = Path.cwd()
    out = []
    for arg in argv:
        path = Path(arg)
        if path.is_absolute():
            try:
                arg = str(Path("..") / path.relative_to(cwd.parent)) if not path.is_relative_to(cwd) \
                    else str(path.relative_to(cwd))
            except ValueError:
                arg = path.name
        out.append(arg)
    return out


def _run(args: argparse.Namespace, argv: list[str]) -> None:
    """The benches of ``args`` (the paper protocol's run-time estimate printed first)."""
    benches = grid(args)
    command = shlex.join(["lightning-dynamical-bench", *_portable(a for a in argv if a != "--from-results")])
    if args.estimate_only or args.protocol == "paper":
        total = typical = 0.0
        for bench in benches:
            splits = load_splits(bench)
            seconds = estimate_seconds(bench, splits)
            usual = estimate_seconds(bench, splits, min(TYPICAL_EPOCHS_PER_ROUND, bench.max_epochs_per_round))
            total, typical = total + seconds, typical + usual
            print(f"estimate {bench.data} b={bench.query_size}: about {duration(usual)}, at most {duration(seconds)} "
                  f"({len(bench.strategies)} strategies x {len(bench.seeds)} seeds x {bench.rounds + 1} rounds)")
        print(f"estimated run time: at most {duration(total)} on this machine ({args.accelerator}), counting "
              f"{args.max_epochs_per_round} epochs every round from measured per-sample step times; about "
              f"{duration(typical)} at {min(TYPICAL_EPOCHS_PER_ROUND, args.max_epochs_per_round)} epochs per round, "
              "about what converged rounds took in this "
              "project's benches (the convergence rule ends a round when it has converged)", flush=True)
        if args.estimate_only:
            return
    for bench in benches:
        out = Path(bench.out)
        out.mkdir(parents=True, exist_ok=True)
        if bench.from_results:
            bench.has_val = bench.val_size > 0
            rows = [r for r in read_results(out / "results.csv")
                    if r["strategy"] in bench.strategies and r["seed"] in bench.seeds]
        else:
            rows = run_bench(bench)
        write_outputs(rows, out, bench, command)
        print(f"wrote {out / 'results.csv'}, {out / 'learning_curve.png'} and {out / 'summary.md'}")


if __name__ == "__main__":
    main()
