"""Add dynamicAL to an existing LightningModule and Trainer: the callback plus a pool DataModule."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, DynamicAL


class LitMLP(L.LightningModule):
    """A plain LightningModule: ``forward`` returns logits, ``training_step`` returns the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main() -> None:
    from sklearn.datasets import load_digits

    L.seed_everything(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    datamodule = ActiveLearningDataModule(TensorDataset(x[:1500], y[:1500]), test=TensorDataset(x[1500:], y[1500:]),
                                          initial_size=100, batch_size=32)
    loop = ActiveLearningLoop(DynamicAL(gamma=2.0), query_size=50, rounds=3, max_epochs_per_round=15)
    trainer = L.Trainer(max_epochs=-1, callbacks=[loop], logger=False, enable_checkpointing=False,
                        default_root_dir="runs/example")
    trainer.fit(LitMLP(), datamodule=datamodule)
    print("labeled after 3 rounds:", datamodule.num_labeled)


if __name__ == "__main__":
    main()
