"""Per-round W&B media in a real offline run, and other loggers left alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import wandb
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from lightning_dynamical import ActiveLearningLoop, Classifier
from lightning_dynamical.data import DigitsDataModule
from lightning_dynamical.reporting.charts import image_array
from lightning_dynamical.strategies.uncertainty import Entropy
from tests.helpers.models import TinyCNN
from tests.helpers.tiny import fit_loop

pytestmark = pytest.mark.usefixtures("one_thread")


def run(tmp_path: Path, logger) -> ActiveLearningLoop:
    seed_everything(0, verbose=False)
    dm = DigitsDataModule(initial_size=40, batch_size=32, seed=0)
    model = Classifier(TinyCNN(1, 10), num_classes=10, lr=0.01)
    loop = ActiveLearningLoop(Entropy(), query_size=10, rounds=1, max_epochs_per_round=2, dirpath=str(tmp_path),
                              save_round_checkpoints=False, log_approximation_ratio=True, verbose=False)
    fit_loop(model, dm, loop, tmp_path, logger=logger, log_every_n_steps=1)
    return loop


def test_offline_wandb_run_holds_curve_histogram_table_and_ratio(tmp_path: Path, monkeypatch) -> None:
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                       "WANDB_DATA_DIR": str(tmp_path / "data"), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                       "WANDB_CONFIG_DIR": str(tmp_path / "config")}.items():
        monkeypatch.setenv(var, value)
    logger = WandbLogger(project="test", save_dir=str(tmp_path), offline=True)
    loop = run(tmp_path, logger)
    logger.experiment.finish()
    wandb.teardown()  # finish() returns before the service has written the run file; teardown waits for it
    assert loop.finished and len(loop.history) == 2
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    for key in (b"al/test_acc", b"al/approximation_ratio", b"al/learning_curve", b"al/learning_curve_table",
                b"wandb/line/v0", b"al/pool_scores", b'"histogram"', b"al/queried", b'"table-file"'):
        assert key in data, key
    tables = run_file.parent / "files" / "media" / "table" / "al"
    queried = [json.loads(p.read_text()) for p in tables.glob("queried_*.table.json")]
    assert len(queried) == 1
    assert queried[0]["columns"] == ["round", "index", "score", "pseudo_label", "true_label", "image"]
    rows = queried[0]["data"]
    assert len(rows) == 10 and all(r[0] == 0 and 0 <= r[3] < 10 and 0 <= r[4] < 10 for r in rows)
    assert all(r[5] == "Image" for r in rows) and b"media/images/" in data and b".png" in data
    curves = [json.loads(p.read_text()) for p in tables.glob("learning_curve_table_*.table.json")]
    assert sorted(len(c["data"]) for c in curves) == [1, 2]  # the curve so far, after rounds 0 and 1


def test_other_loggers_get_scalars_only(tmp_path: Path) -> None:
    loop = run(tmp_path, CSVLogger(str(tmp_path)))
    assert loop.finished
    (metrics,) = tmp_path.glob("lightning_logs/version_*/metrics.csv")
    header = metrics.read_text().splitlines()[0]
    assert "al/approximation_ratio" in header and "al/test_acc" in header
    assert "al/queried" not in header and "al/pool_scores" not in header


@pytest.mark.parametrize(("x", "shape"), [
    (torch.randn(1, 8, 8), (8, 8)),
    (torch.randn(3, 5, 4), (5, 4, 3)),
    (torch.randint(0, 255, (3, 4, 4), dtype=torch.uint8), (4, 4, 3)),
    (torch.randn(2, 8, 8), None),
    (torch.randn(64), None),
    (torch.randn(1, 1, 64), None),
    (np.zeros((1, 8, 8)), None),
])
def test_image_array(x, shape) -> None:
    out = image_array(x)
    assert (out is None) if shape is None else (out.shape == shape and out.dtype == np.uint8)


def test_image_array_scales_each_image_to_full_range() -> None:
    out = image_array(torch.tensor([[[-1.0, 0.0], [0.5, 3.0]]]))
    assert out.min() == 0 and out.max() == 255
    assert image_array(torch.full((1, 3, 3), 2.0)).max() == 0
