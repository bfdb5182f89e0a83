"""A small U-Net for dense segmentation, built only from layers the fast scoring engine covers.

The decoder upsamples with ``nn.Upsample`` followed by a 3x3 ``Conv2d`` rather than a ``ConvTranspose2d``, so every
parameter is scored on the closed-form (fast) path.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_dynamical.errors import ConfigError, check_positive_int
from lightning_dynamical.models.cifar_cnn import conv_bn_relu


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv-BatchNorm-ReLU layers: one U-Net level."""
    return nn.Sequential(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))


class Up(nn.Module):
    """Upsample 2x (nearest), 3x3 conv halving the channels, crop to the skip's size, concatenate, double conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        self.conv = double_conv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)[..., : skip.shape[-2], : skip.shape[-1]]
        return self.conv(torch.cat([skip, x], 1))


class UNet(nn.Module):
    """U-Net: ``depth`` poolings, ``width * 2**level`` channels per level, skip connections by concatenation, a 1x1
    ``Conv2d`` head giving logits ``(batch, num_classes, H, W)``.

    Any ``H`` and ``W`` work and the logits keep the input's size: pooling rounds up (``ceil_mode``), and each
    upsampled map is cropped to its skip connection's size, so odd sizes lose nothing. Sizes divisible by
    ``2**depth`` need no crop. ``dropout`` is the ``Dropout2d`` probability at the bottleneck (for MC-dropout
    strategies such as BALD). At ``width=16, depth=3`` the network has about 0.54M parameters.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16, depth: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("width", width),
                            ("depth", depth)):
            check_positive_int(name, value)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be a number in [0, 1), got {dropout!r}")
        channels = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(double_conv(c_in, c_out)
                                  for c_in, c_out in zip([in_channels, *channels[:-2]], channels[:-1]))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.bottleneck = double_conv(channels[-2], channels[-1])
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList(Up(channels[level + 1], channels[level]) for level in reversed(range(depth)))
        self.head = nn.Conv2d(width, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes, H, W)`` for inputs ``(batch, in_channels, H, W)``."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)
        return self.head(x)
