"""The digits config through the real CLI in a subprocess: rounds, records, offline W&B run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from lightning_dynamical.data.digits import build_digits

ROOT = Path(__file__).resolve().parents[1]


def test_digits_config_two_rounds(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    script = Path(sys.executable).parent / "lightning-dynamical"  # the installed console script
    cmd = [str(script), "fit", "--config", str(ROOT / "configs/digits.yaml"),
           f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
           "--trainer.enable_progress_bar=false", "--trainer.callbacks.init_args.rounds=2",
           "--trainer.callbacks.init_args.query_size=40", "--trainer.callbacks.init_args.max_epochs_per_round=4",
           f"--trainer.callbacks.init_args.dirpath={tmp_path}"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "al_rounds.csv")))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert [int(r["labeled"]) for r in rows] == [100, 140, 180]
    assert all(0 < float(r["test_acc"]) <= 1 for r in rows)
    state = json.loads((tmp_path / "al_state.json").read_text())
    assert len(state["labeled"]) == 180 and len(set(state["labeled"])) == 180
    queried = list(csv.DictReader(open(tmp_path / "al_queries.csv")))
    assert [int(r["index"]) for r in queried] == state["labeled"][100:]
    assert [int(r["round"]) for r in queried] == [0] * 40 + [1] * 40
    targets = build_digits().pool.tensors[1]
    assert all(int(r["label"]) == int(targets[int(r["index"])]) and r["labeled_by"] == "dataset" for r in queried)
    assert "| round | labeled | test_acc" in out.stdout + out.stderr
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    assert b"al/test_acc" in runs[0].read_bytes()
