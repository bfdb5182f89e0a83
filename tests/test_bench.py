"""The bench on a tiny digits preset: outputs, reproducibility across processes, summary arithmetic."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_dynamical.bench import TIMING_FIELDS, aulc, main, mean_std, read_results, summary_markdown

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "digits", "--strategies", "random,entropy", "--seeds", "0,1", "--initial-size", "40",
        "--query-size", "20", "--rounds", "1", "--max-epochs-per-round", "2"]


def without_timings(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in csv.DictReader(f)]


def test_tiny_preset_writes_outputs_and_reproduces_across_processes(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    cmd = [sys.executable, "-m", "lightning_dynamical.bench", *TINY, "--out", str(first)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    main([*TINY, "--out", str(second)])

    rows = read_results(first / "results.csv")
    assert [(r["strategy"], r["seed"], r["round"], r["labeled"]) for r in rows] == [
        (s, seed, k, 40 + 20 * k) for s in ("random", "entropy") for seed in (0, 1) for k in range(2)]
    assert all(0 < r["test_acc"] <= 1 and r["wall_seconds"] > 0 for r in rows)
    assert all(r["score_seconds"] == 0 for r in rows if r["round"] == 1)
    assert list(csv.DictReader(open(first / "results.csv")).fieldnames) == [
        "strategy", "seed", "round", "labeled", "test_acc", "score_seconds", "wall_seconds"]
    assert without_timings(first / "results.csv") == without_timings(second / "results.csv")
    assert len({r["test_acc"] for r in rows}) > 1

    assert (first / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (first / "summary.md").read_text()
    assert "lightning-dynamical-bench --data digits" in summary
    assert "| round | labeled | random | entropy |" in summary
    assert "| strategy | AULC (%) | final accuracy (%) | wall s / run | scoring s / run |" in summary
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
