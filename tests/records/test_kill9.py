"""kill -9 at any moment: records are never half-written, nothing is left behind, and resuming from the newest
round checkpoint ends exactly where an uninterrupted run ends.

One run is killed (SIGKILL) again and again: at named points inside the record writer and the checkpoint save
(``LIGHTNING_DYNAMICAL_KILL_AT``, see :mod:`lightning_dynamical.records.faults`) and at random moments after training
starts. After every kill the next process resumes from the newest ``al_round_<k>.ckpt`` (or starts over if
there is none yet) in the same folder.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from lightning_dynamical.records.faults import ENV
from lightning_dynamical.records.files import ROUND_FIELDS

SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "scripts" / "al_run.py"
ROOT = Path(__file__).resolve().parents[2]
KILLED = -9
# Each fires in the first round the process trains; only checkpoint-renamed lets the run advance a round.
POINTS = ["record-partial:1", "record-written:2", "record-renamed:3", "record-partial:4", "record-written:3",
          "checkpoint-start:1", "checkpoint-partial:1", "checkpoint-written:1", "checkpoint-renamed:1",
          "checkpoint-partial:1", "checkpoint-renamed:1"]
RANDOM_KILLS = 5


def _checkpoints(out: Path) -> list[Path]:
    return sorted(out.glob("al_round_*.ckpt"), key=lambda p: int(re.findall(r"\d+", p.name)[0]))


def _start(out: Path, tmp: Path, kill_at: str | None = None) -> subprocess.Popen:
    checkpoints = _checkpoints(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    env.pop(ENV, None)
    if kill_at:
        env[ENV] = kill_at
    args = [sys.executable, str(SCRIPT), str(out), *([str(checkpoints[-1])] if checkpoints else [])]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def _assert_records_whole(out: Path) -> None:
    """Every record file present parses completely: never half of one."""
    state = out / "al_state.json"
    if state.exists():
        parsed = json.loads(state.read_text())
        assert {"round", "labeled", "history"} <= parsed.keys()
    rounds = out / "al_rounds.csv"
    if rounds.exists():
        text = rounds.read_text()
        assert text.endswith("\n")
        rows = list(csv.reader(text.splitlines()))
        assert tuple(rows[0]) == ROUND_FIELDS and all(len(row) == len(ROUND_FIELDS) for row in rows[1:])


def _comparable(out: Path) -> dict:
    """The labeled set, al_state.json and every al_*.csv, without timing fields."""
    state = json.loads((out / "al_state.json").read_text())
    for row in state["history"]:
        row.pop("score_seconds")
    tables = {}
    for path in sorted(out.glob("al_*.csv")):
        tables[path.name] = [{k: v for k, v in row.items() if "seconds" not in k}
                             for row in csv.DictReader(path.open())]
    return {"labeled": state["labeled"], "state": state, "tables": tables}


def test_kill_9_anywhere_resumes_to_the_uninterrupted_result(tmp_path):
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    baseline = tmp_path / "baseline"
    proc = _start(baseline, systmp)
    assert proc.stdout.readline().strip() == "fit-start"
    started = time.monotonic()
    rc, output = _finish(proc)
    assert rc == 0, output[-3000:]
    # seconds of training left after each round checkpoint (index k + 1) or from the start (index 0)
    saved = [float(line.split()[1]) for line in output.splitlines() if line.startswith("checkpoint ")]
    left = [time.monotonic() - started - t for t in [0.0, *saved]]

    out = tmp_path / "killed"
    rng = random.Random(13)
    fired = []
    for kill_at in POINTS + [None] * RANDOM_KILLS:
        resumed_after = len(_checkpoints(out))
        proc = _start(out, systmp, kill_at)
        if kill_at is None:
            assert proc.stdout.readline().strip() == "fit-start"
            time.sleep(rng.uniform(0, left[resumed_after]))
            proc.kill()
        rc, err = _finish(proc)
        assert rc in (KILLED, 0), f"{kill_at or 'random kill'}: exit {rc}\n{err[-3000:]}"
        if kill_at is not None:
            assert rc == KILLED, f"{kill_at} was never reached\n{err[-3000:]}"
        fired.append(rc == KILLED)
        _assert_records_whole(out)
    proc = _start(out, systmp)
    rc, err = _finish(proc)
    assert rc == 0, err[-3000:]

    print(f"killed {sum(fired)} of {len(fired)} processes")
    assert len(saved) == 5 and sum(fired) >= len(POINTS) + 1  # 4 round checkpoints + al_final.ckpt; a random kill hit
    assert _comparable(out) == _comparable(baseline)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in baseline.iterdir())
    assert list(systmp.iterdir()) == []
