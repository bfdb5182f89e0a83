"""A multilayer perceptron on flattened inputs."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, then ``Linear -> [LayerNorm] -> ReLU -> [Dropout]`` per hidden width, then a Linear head.

    ``in_features`` is the flattened input size (64 for 8x8 digits, 784 for MNIST).
    """

    def __init__(self, in_features: int = 64, num_classes: int = 10, hidden: tuple[int, ...] = (256, 128),
                 dropout: float = 0.0, layer_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if layer_norm:
                layers.append(nn.LayerNorm(size))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)``."""
        return self.fc(self.body(x))
