"""A LeNet-style CNN for 28x28 grey digits (MNIST): learns from a hundred samples, scores fast on a CPU."""

from __future__ import annotations

from torch import nn


class LeNet(nn.Sequential):
    """conv5(16)-ReLU-pool, conv5(32)-ReLU-pool, flatten, dropout, Linear head; 28x28 inputs (4x4 maps left)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.25) -> None:
        super().__init__(nn.Conv2d(in_channels, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * 4 * 4, num_classes))
