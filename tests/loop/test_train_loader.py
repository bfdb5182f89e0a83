"""The one place that reaches into Lightning's fit loop: the next epoch trains on a fresh train loader."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical.loop.train_loader import reload_train_dataloader
from tests.helpers.tiny import quiet_trainer


class Growing(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.size = 4

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(self.size, 2), torch.zeros(self.size, dtype=torch.long)),
                          batch_size=2)


class Tiny(L.LightningModule):
    """Trains and nothing else (no validation step, as the data module has no validation data)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class GrowAfterFirstEpoch(L.Callback):
    def __init__(self, reload: bool) -> None:
        self.reload = reload
        self.batches: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.batches.append(int(trainer.num_training_batches))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.datamodule.size += 4
        if self.reload:
            reload_train_dataloader(trainer)


def _batches_per_epoch(reload: bool) -> list[int]:
    probe = GrowAfterFirstEpoch(reload)
    quiet_trainer(None, [probe], max_epochs=3).fit(Tiny(), datamodule=Growing())
    return probe.batches


def test_the_next_epoch_uses_a_fresh_train_loader() -> None:
    assert _batches_per_epoch(reload=True) == [2, 4, 6]
    assert _batches_per_epoch(reload=False) == [2, 2, 2]  # without it Lightning keeps the first loader
