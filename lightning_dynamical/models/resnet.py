"""ResNet18 with the CIFAR stem, built on torchvision's implementation."""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet
from torchvision.models import resnet18 as tv_resnet18


def resnet18(num_classes: int = 10, in_channels: int = 3, cifar_stem: bool = True) -> ResNet:
    """torchvision's ResNet18 (random init); the head ``fc`` is ``Linear(512, num_classes)``.

    With ``cifar_stem`` (for 32x32 inputs) the stem is a 3x3 stride-1 convolution without max pooling:
    the ImageNet stem (7x7 stride 2 + max pooling) would shrink 32x32 images to 8x8 before the first
    block. Use ``cifar_stem=False`` for large images (e.g. 224x224 Caltech101), where a full-resolution
    stem costs ~16x the compute. 11.2M parameters for 10 classes.
    """
    model = tv_resnet18(weights=None, num_classes=num_classes)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
