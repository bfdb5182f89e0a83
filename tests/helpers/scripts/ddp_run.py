"""One active-learning run on digits for the DDP tests: ``python ddp_run.py MODE DEVICES OUT``.

MODE ``score``: float64, learning rate 0 and frozen BatchNorm statistics, so the weights at scoring time do
not depend on how training was split across ranks; MODE ``train``: ordinary training for 2 rounds, with
stopping criteria recorded (a 50-sample validation split); MODE ``hf``: like ``score`` with a tiny Hugging
Face BERT fed dict batches; MODE ``seg``: like ``score`` for segmentation (a small U-Net on noisy 8x8 images whose
masks are where a smoothed copy is positive).
Every rank writes ``rank<k>.json`` with its labeled set and history.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, DynamicAL
from lightning_dynamical.loop.stopping import GradientNormDecay, StabilizingPredictions, ValidationPlateau
from lightning_dynamical.models import DigitsCNN
from tests.helpers.tiny import digits_datamodule, fit_loop


class Frozen(Classifier):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def hf_task() -> tuple[L.LightningModule, ActiveLearningDataModule]:
    from tests.helpers.hf_text import HFClassifier, token_datamodule

    class FrozenHF(HFClassifier):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return FrozenHF(), token_datamodule(64, 16, initial_size=10, batch_size=8, eval_batch_size=8)


def seg_task() -> tuple[L.LightningModule, ActiveLearningDataModule]:
    from torch.utils.data import TensorDataset

    from lightning_dynamical.models import UNet

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 1, 8, 8, generator=gen)
    y = (nn.functional.avg_pool2d(x, 3, stride=1, padding=1) > 0).long().squeeze(1)
    net = UNet(1, 2, width=4, depth=1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.0
    dm = ActiveLearningDataModule(TensorDataset(x, y), test=TensorDataset(x[:13], y[:13]), initial_size=10,
                                  batch_size=8, eval_batch_size=7, task="segmentation")
    return Frozen(net), dm


def main(mode: str, devices: int, out: Path) -> None:
    L.seed_everything(0)
    strategy = "ddp" if devices > 1 else "auto"
    if mode == "seg":
        model, dm = seg_task()
        loop = ActiveLearningLoop(DynamicAL(), query_size=9, rounds=1, max_epochs_per_round=1, dirpath=str(out),
                                  verbose=False, train_acc_threshold=None)
        trainer = fit_loop(model, dm, loop, out, devices=devices, strategy=strategy, precision="64-true")
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(
            {"labeled": dm.labeled_indices, "round": loop.round, "world": trainer.world_size,
             "sharded": loop.scorer.sharded, "test_metric": [r["test_metric"] for r in loop.history],
             "metric": [r["metric"] for r in loop.history]}))
        return
    if mode == "hf":
        model, dm = hf_task()
        loop = ActiveLearningLoop(DynamicAL(), query_size=7, rounds=1, max_epochs_per_round=1, dirpath=str(out),
                                  verbose=False)
        trainer = fit_loop(model, dm, loop, out, devices=devices, strategy=strategy, precision="64-true")
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(
            {"labeled": dm.labeled_indices, "round": loop.round, "world": trainer.world_size,
             "sharded": loop.scorer.sharded, "buffers": []}))
        return
    net = DigitsCNN()
    if mode == "score":
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.0
    dm = digits_datamodule(initial_size=60, batch_size=16, test_size=297, eval_batch_size=50,
                           val_size=0 if mode == "score" else 50)
    stop = None if mode == "score" else [StabilizingPredictions(threshold=-1.0, rounds=1, stop_set_size=101),
                                         ValidationPlateau(patience=1), GradientNormDecay(fraction=0.999)]
    loop = ActiveLearningLoop(DynamicAL(), query_size=25, rounds=1 if mode == "score" else 2,
                              max_epochs_per_round=1 if mode == "score" else 2, dirpath=str(out), verbose=False,
                              stop=stop, stop_mode="record")
    model = (Frozen if mode == "score" else Classifier)(net)
    trainer = fit_loop(model, dm, loop, out, devices=devices, strategy=strategy,
                       precision="64-true" if mode == "score" else "32-true")
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(
        {"labeled": dm.labeled_indices, "round": loop.round, "world": trainer.world_size,
         "sharded": loop.scorer.sharded,
         "buffers": [b.double().sum().item() for b in model.buffers()],
         "stopping": loop.stopping.state_dict(), "stopped_by": [r.get("stopped_by") for r in loop.history]}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
    if torch.distributed.is_initialized():  # join gloo's threads before exit (else an abort at teardown, under load)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
