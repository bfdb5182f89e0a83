"""A small CNN for 32x32 colour images (the paper's lightweight CIFAR baseline)."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 same-padding convolution followed by BatchNorm and ReLU (bias is redundant before BatchNorm)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CifarCNN(nn.Module):
    """Three conv-BN-ReLU blocks (``width``, ``2*width``, ``4*width`` channels), average pooling, Linear head.

    The two first blocks are followed by 2x2 max pooling. At the default ``width=32`` the network has
    about 95k parameters for 3x32x32 inputs and 10 classes.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2),
            conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)``."""
        return self.fc(self.features(x))
