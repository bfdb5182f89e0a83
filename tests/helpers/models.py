"""Tiny test models with BatchNorm and dropout."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv-BN-ReLU, dropout, global pooling, Linear head: BatchNorm and dropout both present."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(h.mean((2, 3))))


def trained_like(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give BatchNorm non-trivial running statistics by a few train-mode forwards."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model
