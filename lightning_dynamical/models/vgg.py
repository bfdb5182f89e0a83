"""VGG11 with BatchNorm for 32x32 inputs (CIFAR/SVHN variant: a single Linear classifier)."""

from __future__ import annotations

import torch
from torch import nn

VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """VGG feature stack (``"M"`` = 2x2 max pooling), global average pooling, optional dropout, Linear head.

    On 32x32 inputs the five poolings leave a 512x1x1 map; the average pooling makes other sizes work too.
    """

    def __init__(self, config: tuple[int | str, ...], num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1, bias=False),
                           nn.BatchNorm2d(int(item)), nn.ReLU(inplace=True)]
                channels = int(item)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)``."""
        return self.classifier(self.features(x))


def vgg11(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> VGG:
    """VGG11-BN for 32x32 images with classifier ``Linear(512, num_classes)`` (9.2M parameters)."""
    return VGG(VGG11_CONFIG, num_classes=num_classes, in_channels=in_channels, dropout=dropout)
