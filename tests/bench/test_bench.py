"""The bench: the smoke protocol's outputs and reproducibility across processes, the paper protocol on tiny
files in the real on-disk formats, summary arithmetic (one seed, paired comparison, stopping table)."""

from __future__ import annotations

import csv
import importlib
import inspect
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from lightning_dynamical.bench.command import main, parse_args
from lightning_dynamical.bench.presets import PRESETS, load_splits
from lightning_dynamical.bench.protocols import PROTOCOLS
from lightning_dynamical.bench.report import aulc, mean_std, noise_floor_markdown, summary_markdown
from lightning_dynamical.bench.runs import RESULT_FIELDS, TIMING_FIELDS, read_results
from lightning_dynamical.models.classifier import Classifier
from tests.data.test_data import skip_md5, write_caltech101, write_cifar10, write_mnist, write_svhn  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--protocol", "smoke", "--strategies", "random,entropy", "--seeds", "0,1", "--rounds", "1",
        "--max-epochs-per-round", "2", "--threads", "1"]


def without_timings(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in csv.DictReader(f)]


def test_tiny_preset_writes_outputs_and_reproduces_across_processes(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    cmd = [sys.executable, "-m", "lightning_dynamical.bench", *TINY, "--out", str(first)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    threads = torch.get_num_threads()
    main([*TINY, "--out", str(second)])
    assert torch.get_num_threads() == threads  # the bench's thread count does not leak

    rows = read_results(first / "results.csv")
    assert [(r["strategy"], r["seed"], r["round"], r["labeled"]) for r in rows] == [
        (s, seed, k, 40 + 20 * k) for s in ("random", "entropy") for seed in (0, 1) for k in range(2)]
    assert all(0 < r["test_acc"] <= 1 and r["wall_seconds"] > 0 for r in rows)
    assert all(r["score_seconds"] == 0 for r in rows if r["round"] == 1)
    assert list(csv.DictReader(open(first / "results.csv")).fieldnames) == list(RESULT_FIELDS)
    assert all(r["converged_by"] == "max_epochs" and r["epochs"] == 2 for r in rows)  # the tiny protocol caps
    assert all(math.isnan(r["best_epoch_test_acc"]) for r in rows)  # not asked for
    assert all(r["train_loss"] > 0 and 0 <= r["train_acc"] <= 1 for r in rows)
    assert without_timings(first / "results.csv") == without_timings(second / "results.csv")
    assert len({r["test_acc"] for r in rows}) > 1

    assert (first / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (first / "summary.md").read_text()
    assert "lightning-dynamical-bench --protocol smoke" in summary and "pool limited to 400" in summary
    assert ", 1 CPU threads." in summary
    assert "| round | labeled | random | entropy |" in summary
    assert "| strategy | AULC (%) | final accuracy (%) | wall s / run | scoring s / run |" in summary
    assert "| entropy | ΔAULC" not in summary and "| entropy | " in summary.split("## Paired comparison")[1]
    assert "| random | kappa | " in summary
    assert (first / "runs" / "entropy_seed1" / "al_rounds.csv").is_file()


def test_aulc_and_mean_std() -> None:
    assert aulc([100, 200, 300], [0.5, 0.7, 0.7]) == pytest.approx((0.6 * 100 + 0.7 * 100) / 200)
    assert aulc([100], [0.4]) == 0.4
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_summary_numbers() -> None:
    rows = [{"strategy": s, "seed": seed, "round": k, "labeled": 10 + 10 * k, "test_acc": acc,
             "score_seconds": 0.5, "wall_seconds": 2.0 * (k + 1)}
            for s, base in (("a", 0.5), ("b", 0.6)) for seed, shift in ((0, 0.0), (1, 0.1))
            for k, acc in enumerate([base + shift, base + shift + 0.1])]
    text = summary_markdown(rows, "t", "p")
    assert "| 0 | 10 | 55.00 ± 7.07 | **65.00 ± 7.07** |" in text
    assert "| 1 | 20 | 65.00 ± 7.07 | **75.00 ± 7.07** |" in text
    assert "| a | 60.00 ± 7.07 | 65.00 ± 7.07 | 4.0 ± 0.0 | 1.00 ± 0.00 |" in text


def test_protocol_defaults_and_overrides():
    smoke = parse_args(["--protocol", "smoke"])
    assert (smoke.data, smoke.seeds, smoke.initial_size, smoke.query_size) == ("digits", [0], 40, 20)
    assert "margin" in smoke.strategies
    assert parse_args(["--protocol", "smoke", "--seeds", "3,4", "--rounds", "5"]).seeds == [3, 4]
    paper = parse_args(["--protocol", "paper"])
    assert (paper.initial_size, paper.rounds, paper.seeds) == (500, 5, [0, 1, 2, 3, 4])
    assert paper.datasets == ["cifar10_resnet18", "svhn", "caltech101"] and paper.query_sizes == [250, 500, 1000]
    assert PROTOCOLS["paper"].query_sizes == (250, 500, 1000)
    assert "margin" in parse_args([]).strategies
    with pytest.raises(SystemExit):
        parse_args(["--protocol", "paper", "--query-sizes", "0"])


@pytest.mark.usefixtures("skip_md5")
def test_paper_protocol_on_tiny_files_in_the_real_formats(tmp_path, capsys, one_thread):
    root = tmp_path / "data"
    write_cifar10(root)
    write_svhn(root)
    write_caltech101(root)
    out = tmp_path / "paper"
    main(["--protocol", "paper", "--root", str(root), "--initial-size", "4", "--query-sizes", "2,3", "--rounds", "1",
          "--seeds", "0", "--strategies", "dynamical", "--max-epochs-per-round", "1", "--image-size", "32",
          "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.index("estimated run time: at most") < printed.index("wrote ")
    assert printed.count("estimate ") == 6
    for data in ("cifar10_resnet18", "svhn", "caltech101"):
        for b in (2, 3):
            rows = read_results(out / f"{data}_b{b}" / "results.csv")
            assert [(r["strategy"], r["labeled"]) for r in rows] == [("dynamical", 4), ("dynamical", 4 + b)]
            summary = (out / f"{data}_b{b}" / "summary.md").read_text()
            assert "(protocol `paper`)" in summary and "± n/a" in summary and "± 0.00" not in summary


def test_estimate_only_runs_nothing(tmp_path, capsys):
    main(["--protocol", "smoke", "--estimate-only", "--out", str(tmp_path / "est")])
    assert "estimated run time: at most" in capsys.readouterr().out
    assert not (tmp_path / "est").exists()


def _rows(per_seed: dict[str, list[list[float]]], stopped: dict[tuple[str, int, int], str] | None = None):
    stopped = stopped or {}
    return [{"strategy": s, "seed": seed, "round": k, "labeled": 10 + 10 * k, "test_acc": acc, "train_loss": 0.1,
             "train_acc": 1.0, "stopped_by": stopped.get((s, seed, k), ""), "score_seconds": 0.5,
             "wall_seconds": 2.0 * (k + 1), "epochs": 7, "converged_by": "loss_target", "smoothed_loss": 0.009,
             "best_epoch_test_acc": math.nan, "query_sqnorm_median": math.nan, "query_dot_median": math.nan,
             "query_dot_ratio_median": math.nan, "query_approximation_ratio": math.nan}
            for s, curves in per_seed.items() for seed, accs in enumerate(curves) for k, acc in enumerate(accs)]


def test_one_seed_reports_no_spread():
    text = summary_markdown(_rows({"a": [[0.5, 0.6]], "b": [[0.6, 0.7]]}), "t", "p")
    assert "| 1 | 20 | 60.00 ± n/a | **70.00 ± n/a** |" in text
    assert "± 0.00" not in text and "over 1 seed\n" in text


def test_paired_comparison_and_stopping_table():
    rows = _rows({"random": [[0.5, 0.6], [0.5, 0.7], [0.5, 0.6]],
                  "entropy": [[0.5, 0.8], [0.5, 0.6], [0.5, 0.7]],
                  "x": [[0.5, 0.7], [0.5, 0.8], [0.5, 0.5]]},
                 {("x", 0, 1): "kappa", ("x", 2, 0): "kappa;val_plateau", ("x", 2, 1): "kappa"})
    text = summary_markdown(rows, "t", "p", {"x": ["kappa", "val_plateau", "gradient_norm"], "random": ["kappa"]})
    # AULC of two points is their mean, so per-seed differences are half the final-accuracy differences (pp).
    # x - random: +5, +5, -5 -> mean 1.67, std 5.77, 2 of 3 won; x - entropy: -5, +10, -10 -> -1.67 +- 10.41, 1 won
    assert "| x | +1.67 ± 5.77 | 2/3 | -1.67 ± 10.41 | 1/3 |" in text
    assert "| entropy | +3.33 ± 7.64 | 2/3 |  |  |" in text
    assert "| random |  |  | -3.33 ± 7.64 | 1/3 |" in text
    # kappa fires first at round 1 (seed 0, acc 0.7) and round 0 (seed 2, acc 0.5); final accuracies 0.7 and 0.5
    assert "| x | kappa | 2/3 | 0.5 ± 0.7 | 15 ± 7 | 60.00 ± 14.14 | 60.00 ± 14.14 |" in text
    assert "| x | val_plateau | 1/3 | 0.0 ± n/a | 10 ± n/a | 50.00 ± n/a | 50.00 ± n/a |" in text
    assert "| x | gradient_norm | 0/3 | did not fire | | | |" in text
    assert "| random | kappa | 0/3 | did not fire | | | |" in text


def test_variants_are_compared_with_the_first_strategy_when_random_and_entropy_did_not_run():
    rows = _rows({"dynamical": [[0.5, 0.6], [0.5, 0.7]], "dynamical_gamma0": [[0.5, 0.8], [0.5, 0.6]]})
    text = summary_markdown(rows, "t", "p")
    assert "ΔAULC vs dynamical (pp)" in text and "vs random" not in text
    # AULC of two points is their mean: gamma0 - dynamical per seed +10, -5 pp -> mean 2.50, std 10.61, 1 of 2 won
    assert "| dynamical_gamma0 | +2.50 ± 10.61 | 1/2 |" in text


def test_the_best_baseline_is_a_reference_and_the_noise_floor_pairs_trainer_seeds():
    rows = _rows({"random": [[0.5, 0.6], [0.5, 0.6]], "margin": [[0.5, 0.9], [0.5, 0.8]],
                  "dynamical": [[0.5, 0.8], [0.5, 0.8]]})
    text = summary_markdown(rows, "t", "p")
    assert "ΔAULC vs margin (pp)" in text
    # dynamical - margin per seed: -5, 0 pp -> mean -2.50, std 3.54, 0 of 2 won
    assert "| dynamical | +10.00 ± 0.00 | 2/2 | -2.50 ± 3.54 | 0/2 |" in text
    again = _rows({"dynamical": [[0.5, 0.7], [0.5, 0.9]]})
    floor = "\n".join(noise_floor_markdown(rows, again, 1000))
    # per seed -5, +5 pp: mean 0, std 7.07, mean |d| 5, 2 std / sqrt(2) = 10.00; final -10, +10
    assert "| dynamical | +0.00 ± 7.07 | 5.00 | 10.00 | +0.00 ± 14.14 |" in floor
    assert "| margin |" not in floor and "trainer seed + 1000" in floor


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


SHARED_DATA_ARGS = {"root", "download", "initial_size", "balanced", "val_size", "batch_size", "eval_batch_size",
                    "num_workers", "seed"}


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_builds_what_its_config_names(name: str) -> None:
    """One experiment, one definition: the bench preset's network, optimiser, DataModule and its options are
    those of ``configs/<config>`` (so the bench measures what the README's CLI commands run)."""
    preset = PRESETS[name]
    config = yaml.safe_load((ROOT / "configs" / preset.config).read_text())
    model_args, data = config["model"]["init_args"], config["data"]
    net_spec = model_args.pop("net")
    image_size = data["init_args"].get("image_size", 32)
    torch.manual_seed(0)
    from_config = _import(net_spec["class_path"])(**net_spec["init_args"])
    torch.manual_seed(0)
    from_preset = preset.net(model_args["num_classes"], image_size)
    assert repr(from_preset) == repr(from_config)
    assert all(torch.equal(a, b) for a, b in zip(from_preset.state_dict().values(), from_config.state_dict().values()))
    defaults = inspect.signature(Classifier).parameters
    for key in ("optimizer", "lr", "weight_decay"):
        assert model_args.get(key, defaults[key].default) == getattr(preset, key), key
    assert (data["init_args"]["batch_size"], data["init_args"]["eval_batch_size"]) == \
        (preset.batch_size, preset.eval_batch_size)
    module = preset.data(parse_args(["--data", name, "--image-size", str(image_size)]))
    assert type(module) is _import(data["class_path"])
    for key, value in data["init_args"].items():
        if key not in SHARED_DATA_ARGS:
            assert getattr(module, key) == value, key


def test_augmented_mnist_augments_the_training_view_only(tmp_path: Path) -> None:
    """``--augment``: the labeled samples are re-drawn shifted every time they are read (not cached away with
    the decoded evaluation data), while scoring and evaluation see fixed images."""
    write_mnist(tmp_path, n_train=12, n_test=5)
    args = parse_args(["--data", "mnist", "--root", str(tmp_path), "--augment", "--pool-limit", "10"])
    splits = load_splits(args)
    assert isinstance(splits.pool_eval, TensorDataset) and isinstance(splits.test, TensorDataset)
    torch.manual_seed(0)
    draws = torch.stack([torch.stack([splits.pool[i][0] for i in range(10)]) for _ in range(4)])
    assert not all(torch.equal(draws[0], d) for d in draws[1:])
    assert torch.equal(torch.stack([splits.pool_eval[i][0] for i in range(10)]), splits.pool_eval.tensors[0])
    plain = load_splits(parse_args(["--data", "mnist", "--root", str(tmp_path), "--pool-limit", "10"]))
    assert plain.pool is plain.pool_eval
    assert torch.equal(plain.pool_eval.tensors[0], splits.pool_eval.tensors[0])
    with pytest.raises(SystemExit):
        parse_args(["--data", "digits", "--augment"])
