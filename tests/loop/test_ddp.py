"""DDP on CPU (gloo): sharded scoring selects what one process selects, and every rank agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from lightning_dynamical.loop.distributed import shard

SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "scripts" / "ddp_run.py"
ROOT = Path(__file__).resolve().parents[2]


def _run(mode: str, devices: int, out: Path) -> list[dict]:
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), mode, str(devices), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]


def test_shards_cover_everything_once():
    for n in (0, 1, 7, 100):
        for world in (1, 2, 3, 8):
            parts = [shard(list(range(n)), r, world) for r in range(world)]
            assert sum(parts, []) == list(range(n))


def test_dict_batches_and_a_hugging_face_model_shard_like_one_process(tmp_path):
    one = _run("hf", 1, tmp_path / "one")
    two = _run("hf", 2, tmp_path / "two")
    assert two[0]["sharded"] and two[0]["world"] == 2
    assert one[0]["labeled"] == two[0]["labeled"] == two[1]["labeled"]
    assert len(one[0]["labeled"]) == 17


def test_segmentation_shards_like_one_process_and_every_rank_measures_the_same_miou(tmp_path):
    one = _run("seg", 1, tmp_path / "one")
    two = _run("seg", 2, tmp_path / "two")
    assert two[0]["sharded"] and two[0]["world"] == 2 and two[0]["metric"] == ["miou", "miou"]
    assert one[0]["labeled"] == two[0]["labeled"] == two[1]["labeled"] and len(one[0]["labeled"]) == 19
    assert two[0]["test_metric"] == two[1]["test_metric"]
    assert abs(one[0]["test_metric"][0] - two[0]["test_metric"][0]) < 1e-6


def test_two_process_scoring_selects_like_one_process(tmp_path):
    one = _run("score", 1, tmp_path / "one")
    two = _run("score", 2, tmp_path / "two")
    assert two[0]["world"] == 2 and two[0]["sharded"] and not one[0]["sharded"]
    assert one[0]["labeled"] == two[0]["labeled"] == two[1]["labeled"]
    assert len(one[0]["labeled"]) == 85


def test_two_process_run_agrees_on_every_rank(tmp_path):
    ranks = _run("train", 2, tmp_path / "ddp")
    assert ranks[0]["labeled"] == ranks[1]["labeled"]
    assert ranks[0]["buffers"] == ranks[1]["buffers"]  # BatchNorm statistics synced before scoring
    assert len(set(ranks[0]["labeled"])) == 110 and ranks[0]["round"] == 2
    state = json.loads((tmp_path / "ddp" / "al_state.json").read_text())
    assert state["labeled"] == ranks[0]["labeled"]
    assert [row["labeled"] for row in state["history"]] == [60, 85, 110]
    assert ranks[0]["stopping"] == ranks[1]["stopping"] and ranks[0]["stopped_by"] == ranks[1]["stopped_by"]
    assert ["kappa" in s for s in ranks[0]["stopped_by"]] == [False, True, True]  # kappa >= -1 from round 1
    assert len(ranks[0]["stopping"]["kappa"]["previous"]) == 101 and ranks[0]["stopping"]["gradient_norm"]["reference"]
    assert torch.load(tmp_path / "ddp" / "al_round_1.ckpt", weights_only=True)["ActiveLearningDataModule"][
        "labeled"] == ranks[0]["labeled"]


class _FakeStrategy:
    """Pretends rank 0 selected something else, to exercise the run-time agreement check."""

    root_device = torch.device("cpu")

    def broadcast(self, obj, src=0):
        return "0" * 64

    def reduce(self, tensor, reduce_op="sum"):
        return tensor * 2


class _FakeTrainer:
    world_size, global_rank = 2, 1
    strategy = _FakeStrategy()


def test_disagreeing_ranks_fail_loudly():
    import pytest

    from lightning_dynamical.loop.distributed import check_agreement

    with pytest.raises(RuntimeError, match="Ranks disagree on the round-3 selection"):
        check_agreement(_FakeTrainer(), [4, 5, 6], "the round-3 selection")
