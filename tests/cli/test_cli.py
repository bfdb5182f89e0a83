"""The digits config through the real CLI in a subprocess: rounds, records, offline W&B run, a quiet console, and
an interrupted run resumed with the command it printed."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lightning_dynamical.data.digits import build_digits

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "lightning-dynamical"  # the installed console script
NOISE = ("Tip:", "GPU available", "wandb: WARNING", "Total length", "weights_only", "LeafSpec", "validation_step",
         "Traceback")


def _command(tmp_path: Path, rounds: int) -> list[str]:
    return [str(SCRIPT), "fit", "--config", str(ROOT / "configs/digits.yaml"),
            f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.enable_progress_bar=false", f"--trainer.callbacks.init_args.rounds={rounds}",
            "--trainer.callbacks.init_args.query_size=40",
            f"--trainer.callbacks.init_args.dirpath={tmp_path}"]


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("WANDB_SILENT", None)  # the CLI is quiet on its own
    return env


def test_digits_config_two_rounds(tmp_path):
    out = subprocess.run(_command(tmp_path, 2), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "al_rounds.csv")))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert [int(r["labeled"]) for r in rows] == [100, 140, 180]
    assert all(0 < float(r["test_acc"]) <= 1 for r in rows)
    # The shipped config's rounds end by the convergence rule, never on one epoch, and say so.
    assert all(r["converged_by"] in ("loss_target", "plateau") and int(r["epochs"]) >= 5 for r in rows), rows
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

    console = out.stdout + out.stderr
    assert not [word for word in NOISE if word in console], console
    lines = console.splitlines()
    assert len(lines) <= 16, console  # 3 rounds, the table, where everything went
    assert lines[0].startswith("[active learning] round 0: labeled=100 pool=1300")
    assert "| round | labeled | test_acc | epochs | score_s |" in lines
    assert f"  records       {tmp_path}/al_rounds.csv, {tmp_path}/al_queries.csv, {tmp_path}/al_state.json" in lines
    assert f"  checkpoints   al_round_0.ckpt .. al_round_1.ckpt in {tmp_path}" in lines
    assert any(line.startswith("  final model   ") and line.endswith(".ckpt") for line in lines)
    assert f"  upload with   wandb sync {runs[0].parent}" in lines


def test_sigterm_names_the_checkpoint_and_the_resume_command_continues_the_wandb_group(tmp_path):
    proc = subprocess.Popen(_command(tmp_path, 3), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (tmp_path / "al_round_0.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    console, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, console
    found = re.search(r"stopped by SIGTERM in round (\d+)\. Last round checkpoint: (\S+)\nResume with: (.+)", console)
    assert found, console
    stopped, checkpoint, resume = int(found.group(1)), found.group(2), shlex.split(found.group(3))
    assert checkpoint == f"{tmp_path}/al_round_{stopped - 1}.ckpt" and stopped < 3
    assert resume == ["lightning-dynamical", *_command(tmp_path, 3)[1:], "--ckpt_path", checkpoint]

    done = subprocess.run([str(SCRIPT), *resume[1:]], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed_console = done.stdout + done.stderr
    noise = (*NOISE, "dirpath has changed", "exists and is not empty")
    assert not [word for word in noise if word in resumed_console], resumed_console
    assert [int(r["round"]) for r in csv.DictReader(open(tmp_path / "al_rounds.csv"))] == [0, 1, 2, 3]
    first = torch.load(checkpoint, weights_only=True)["wandb_run"]
    last = torch.load(tmp_path / "al_round_2.ckpt", weights_only=True)["wandb_run"]
    assert first["group"] == last["group"] and first["id"] != last["id"]
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2
    models = list(tmp_path.glob("lightning-dynamical/*/checkpoints/*.ckpt"))  # one folder for both runs
    assert len({path.parent for path in models}) == 1
