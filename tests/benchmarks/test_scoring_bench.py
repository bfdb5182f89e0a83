"""``benchmarks/scoring.py`` end to end on the paper's CNN: the G_S-mode ``score`` row, the profile by profiler
range, and a bf16-mixed row. The script runs in a fresh interpreter: it forks its children, which autograd's threads
in a test process that already ran backward passes do not allow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scoring.py"


def bench(*args: str) -> str:
    """The benchmark's standard output, run at one thread in its own interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--threads", "1"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def rows(out: str, first: str) -> list[list[str]]:
    """The cells of the markdown rows whose first cell is ``first``."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    return [c for c in cells if c[0] == first]


def test_score_row_and_profile() -> None:
    out = bench("--models", "cifar_cnn", "--methods", "fwd+bwd,score", "--pool", "64", "--batch-size", "16",
                "--rounds", "1", "--profile")
    assert "pool of 64 samples in batches of 16, G_S included" in out
    table = {r[2]: r for r in rows(out, "cifar_cnn")}
    assert set(table) == {"fwd+bwd", "score"}
    score = table["score"]
    assert score[1] == "32" and float(score[3]) > 0 and float(score[4]) > 0 and score[7] == "100%"
    profile = out[out.index("Profile of cifar_cnn"):]
    phases = {(r[0], r[1]) for r in rows(profile, "fwd+bwd") + rows(profile, "score")}
    assert {("fwd+bwd", "forward"), ("fwd+bwd", "backward"), ("score", "forward"), ("score", "backward"),
            ("score", "statistics/conv2d"), ("score", "labeled_gradient")} <= phases
    result = json.loads(out.strip().splitlines()[-1])
    assert result["profile"][0]["model"] == "cifar_cnn"
    assert {r["phase"] for r in result["profile"][0]["runs"]["score"]} >= {"forward", "backward", "statistics/conv2d"}


def test_bf16_mixed_row() -> None:
    out = bench("--models", "cifar_cnn", "--methods", "fwd+bwd,auto", "--precision", "bf16-mixed", "--batches", "1",
                "--batch-size", "8")
    table = {r[2]: r for r in rows(out, "cifar_cnn")}
    assert table["auto"][1] == "bf16-mixed" and float(table["auto"][3]) > 0
