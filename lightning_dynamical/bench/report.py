"""``learning_curve.png`` and ``summary.md``: curves, AULC, paired comparisons and stopping tables."""


from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning_dynamical.bench.presets import PRESETS, STRATEGIES, preset_task
from lightning_dynamical.bench.runs import (
    bench_criteria,
)
from lightning_dynamical.records import files as records
from lightning_dynamical.strategies.dynamical import DynamicAL

METRIC_LABELS = {"acc": "accuracy", "miou": "mean IoU", "f1": "micro F1", "entity_f1": "entity F1"}
"""How the report names each task's headline metric (``results.csv``'s ``metric``)."""


def metric_label(rows: Sequence[dict]) -> str:
    """The name of the rows' headline metric in words (``test_metric``; accuracy for classification)."""
    name = str(rows[0].get("metric") or "acc") if rows else "acc"
    return METRIC_LABELS.get(name, name)


def headline(row: dict) -> float:
    """A row's headline metric: ``test_metric`` (rows written before tasks hold only ``test_acc``, the same thing)."""
    return row["test_metric"] if "test_metric" in row else row["test_acc"]


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
        stats = [mean_std([headline(r) for r in rs]) for rs in per_round]
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
    ax.set_ylabel(f"test {metric_label(rows)} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def spread(mean: float, std: float, n: int, digits: int) -> str:
    """``mean ± std``; with one seed there is no spread to report: ``mean ± n/a``."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f} ± n/a"


def signed(mean: float, std: float, n: int) -> str:
    """A difference in pp with its sign (``+0.00`` for a zero that rounding made ``-0.00``)."""
    mean = round(mean, 2) + 0.0
    return f"{'+' if mean >= 0 else ''}{spread(mean, std, n, 2)}"


def run_aulc(runs: Sequence[dict]) -> float:
    return aulc([r["labeled"] for r in runs], [headline(r) for r in runs])


def rounds_markdown(groups: dict[str, dict[int, list[dict]]]) -> list[str]:
    """How the rounds ended and which term of the dynamicAL score chose, per strategy; the best-epoch test
    accuracy (selected on the test set) where it was recorded, labelled so."""
    rows = [r for seeds in groups.values() for runs in seeds.values() for r in runs]
    if not any(r.get("converged_by") for r in rows):  # results of a bench before the convergence rule
        return []
    best_recorded = any(not math.isnan(r.get("best_epoch_test_acc", math.nan)) for r in rows)
    extra = " AULC of best-epoch test accuracy (%, selected on the test set) |" if best_recorded else ""
    head = "| strategy | epochs per round | converged: loss target / plateau | capped | median g·G_S / ‖g‖² |" + extra
    lines = ["## Rounds", "", head, "|---" * (head.count("|") - 1) + "|"]
    for strategy, seeds in groups.items():
        runs = [r for rs in seeds.values() for r in rs]
        ended = [r["converged_by"] for r in runs]
        ratios = [v for r in runs if not math.isnan(v := r.get("query_dot_ratio_median", math.nan))]
        ratio = f"{statistics.median(ratios):.3g}" if ratios else ""
        cells = [strategy, f"{statistics.fmean(r['epochs'] for r in runs):.1f}",
                 f"{ended.count('loss_target')} / {ended.count('plateau')}", str(ended.count("max_epochs")), ratio]
        if best_recorded:
            best = [100 * aulc([r["labeled"] for r in rs], [r["best_epoch_test_acc"] for r in rs])
                    for rs in seeds.values()]
            cells.append(spread(*mean_std(best), len(best), 2))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", "Rounds end when training has converged (see the protocol); a capped round hit "
                    "max_epochs_per_round first. The g·G_S / ‖g‖² column is the median, over rounds, of the "
                    "per-query median (dynamicAL strategies): well above 1, the training-dynamics term chose the "
                    "query; near 0, the gradient norm did.", ""]


def summary_markdown(rows: Sequence[dict], title: str, protocol: str,
                     criteria: dict[str, list[str]] | None = None) -> str:
    """Mean +/- std accuracy per round (best in bold), AULC, final accuracy and times per strategy, the paired
    comparison with Random and Entropy, and where each recorded stopping criterion would have stopped
    (``criteria``: the names recorded per strategy, so that criteria that never fired are listed too)."""
    groups, lines = by_strategy(rows), [f"# {title}", "", protocol, ""]
    strategies, label = list(groups), metric_label(rows)
    curve = curves(rows)
    n_seeds = max(len(seeds) for seeds in groups.values())
    lines += [f"## Test {label} (%), mean ± std over {n_seeds} seed{'s' if n_seeds > 1 else ''}", "",
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
              f"| strategy | AULC (%) | final {label} (%) | wall s / run | scoring s / run |", "|---|---|---|---|---|"]
    for strategy, seeds in groups.items():
        runs = list(seeds.values())
        n = len(runs)
        area = mean_std([100 * run_aulc(rs) for rs in runs])
        final = mean_std([100 * headline(rs[-1]) for rs in runs])
        wall = mean_std([rs[-1]["wall_seconds"] for rs in runs])
        scoring = mean_std([sum(r["score_seconds"] for r in rs) for rs in runs])
        lines.append(f"| {strategy} | {spread(*area, n, 2)} | {spread(*final, n, 2)} | {spread(*wall, n, 1)} | "
                     f"{spread(*scoring, n, 2)} |")
    lines += ["", f"AULC: trapezoidal area under test {label} vs labeled-set size divided by the labeled range "
              "(its mean over that range). ± is the sample standard deviation over seeds (n/a with one seed). "
              "Wall time covers a whole run (training, test evaluation, scoring); scoring time sums the strategy's "
              "pool scoring over rounds.", ""]
    lines += rounds_markdown(groups)
    lines += paired_markdown(groups) + stopping_markdown(groups, criteria or {}, label)
    return "\n".join(lines)


def paired_markdown(groups: dict[str, dict[int, list[dict]]]) -> list[str]:
    """Each strategy against Random, Entropy and the best baseline (the highest mean AULC among strategies that are
    not dynamicAL) on the same seeds (against the first strategy when none ran, e.g. a table of dynamicAL
    variants): per-seed AULC differences, seeds won."""
    if len(groups) < 2:
        return []
    references: list[str] = [r for r in ("random", "entropy") if r in groups]
    baselines = [s for s in groups if not s.startswith("dynamical")]
    if baselines:
        best = max(baselines, key=lambda s: statistics.fmean(run_aulc(rs) for rs in groups[s].values()))
        references += [] if best in references else [best]
    references = references or [next(iter(groups))]
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
            cells += [signed(m, sd, len(diffs)),
                      f"{sum(d > 0 for d in diffs)}/{len(diffs)}"]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    lines += ["", "ΔAULC: per seed, the strategy's AULC minus the reference's on the same seed (same initial set); "
              "mean ± std of those differences in percentage points. Seeds won: seeds with a positive difference.",
              ""]
    return lines


def stopping_markdown(groups: dict[str, dict[int, list[dict]]], criteria: dict[str, list[str]],
                      label: str = "accuracy") -> list[str]:
    """Per strategy and recorded criterion: in how many seeds it fired, the first round it fired, the labeled
    size and test accuracy there, against the final accuracy (criteria are recorded, never enforced)."""
    lines = ["## Where each stopping criterion would have stopped", "",
             f"| strategy | criterion | fired in seeds | round | labeled | {label} there (%) | final {label} (%) |",
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
            acc = mean_std([100 * headline(r) for r, _ in fired])
            final = mean_std([100 * headline(runs[-1]) for _, runs in fired])
            lines.append(f"| {strategy} | {name} | {n}/{len(seeds)} | {spread(*rnd, n, 1)} | {spread(*lab, n, 0)} | "
                         f"{spread(*acc, n, 2)} | {spread(*final, n, 2)} |")
    if not found:
        lines.append("| (no criteria recorded) | | | | | | |")
    lines += ["", f"Means over the seeds where the criterion fired; final {label} is of those same runs.", ""]
    return lines


def round_rule(args: argparse.Namespace) -> str:
    """The convergence rule of ``args`` in words."""
    fit = (f"labeled-set accuracy >= {args.train_acc_threshold} for {args.fit_epochs} epochs in a row and "
           if args.train_acc_threshold is not None else "")
    target = f"at most {args.loss_target} or " if args.loss_target is not None else ""
    return (f"a round ends when training has converged: {fit}the train loss averaged over {args.smoothing} epochs "
            f"{target}without a {args.rel_delta:.1%} relative (and {args.min_delta} absolute) improvement for "
            f"{args.patience} epochs; at most {args.max_epochs_per_round} epochs per round")


def write_outputs(rows: Sequence[dict], out: Path, args: argparse.Namespace, command: str) -> None:
    """``learning_curve.png`` and ``summary.md`` from the rows (``results.csv`` is written as runs finish)."""
    n, preset = len(args.seeds), PRESETS[args.data]
    title = f"{args.data}: M={args.initial_size}, b={args.query_size}, R={args.rounds}, {n} seeds"
    plot_curves(rows, out / "learning_curve.png", title)
    pool = f"pool limited to {args.pool_limit}" if args.pool_limit else "full pool"
    subset = f", {args.pool_subset} pool samples scored per round" if args.pool_subset else ""
    named = f" (protocol `{args.protocol}`)" if args.protocol else ""
    val = f", validation split of {args.val_size} pool samples" if args.val_size else ""
    has_val = getattr(args, "has_val", args.val_size > 0)
    criteria = ", ".join(repr(c) for c in bench_criteria(DynamicAL(), has_val, preset_task(args)))

    protocol = (f"Command: `{command}`{named}\n\nProtocol: initial labeled set M={args.initial_size}"
                f"{' (class-balanced)' if args.balanced else ''}, query size b={args.query_size}, "
                f"R={args.rounds} rounds; {round_rule(args)}; {pool}{subset}{val}"
                f"{'; the pool imbalanced by the authors class ratios' if args.imbalanced_pool else ''}"
                f"{'; a fresh optimizer state every round' if args.fresh_optimizer else ''}"
                f"{f'; trainer seeded with seed + {args.trainer_seed_offset}' if args.trainer_seed_offset else ''}"
                f"; seeds "
                f"{', '.join(map(str, args.seeds))}. Model: {preset.model}, {preset.optimizer} lr {preset.lr}, "
                f"weight decay {preset.weight_decay}, batch {preset.batch_size}; {args.accelerator}, "
                f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads. Stopping criteria recorded "
                f"(not enforced): {criteria} "
                "(GradientNormDecay for dynamicAL strategies only).")
    task = preset_task(args)
    recorded = {s: [c.name for c in bench_criteria(STRATEGIES[s](0), has_val, task)] for s in args.strategies}
    summary = summary_markdown(rows, f"Active-learning benchmark: {args.data}", protocol, recorded)
    records.atomic_write_text(str(out / "summary.md"), summary)


def noise_floor_markdown(main: Sequence[dict], other: Sequence[dict], offset: int) -> list[str]:
    """The noise floor: each strategy of ``other`` (the same runs with the trainer seeded ``offset`` higher: the same
    initial labeled sets, other weights, shuffles and dropout) against itself in ``main``, paired by seed."""
    groups, again = by_strategy(main), by_strategy(other)
    lines = [f"## Noise floor (trainer seed + {offset}, same initial sets)", "",
             "| strategy | ΔAULC (pp) | mean abs ΔAULC (pp) | 2 std / sqrt(n) (pp) | Δfinal accuracy (pp) |",
             "|---|---|---|---|---|"]
    for strategy, seeds in again.items():
        common = sorted(set(seeds) & set(groups.get(strategy, {})))
        if not common:
            continue
        diffs = [100 * (run_aulc(seeds[s]) - run_aulc(groups[strategy][s])) for s in common]
        finals = [100 * (headline(seeds[s][-1]) - headline(groups[strategy][s][-1])) for s in common]
        m, sd = mean_std(diffs)
        lines.append(f"| {strategy} | {signed(m, sd, len(diffs))} | {statistics.fmean(abs(d) for d in diffs):.2f} "
                     f"| {2 * sd / math.sqrt(len(diffs)):.2f} | {signed(*mean_std(finals), len(finals))} |")
    return lines + ["", "The same strategy run twice on the same initial labeled sets differs by this much through "
                    "training randomness alone: a paired difference between strategies smaller than these is not "
                    "evidence.", ""]
