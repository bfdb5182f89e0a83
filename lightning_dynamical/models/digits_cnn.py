"""A small CNN for scikit-learn's 8x8 digits: trains in seconds on a CPU."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two conv-BN-ReLU layers (32 and 64 channels), 2x2 max pooling, dropout, flatten, Linear head.

    The adaptive pooling to 4x4 keeps the spatial layout of the digit (global average pooling
    would discard it) and makes the head size independent of the input size.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(4),
            nn.Dropout(dropout),
            nn.Flatten(),
        )
        self.fc = nn.Linear(64 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)``."""
        return self.fc(self.features(x))
