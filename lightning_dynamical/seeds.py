"""One rule for deriving per-round (per-epoch, per-pool-size) seeds from a user's seed."""

from __future__ import annotations

import torch

STRIDE = 1_000_003
"""A prime larger than any round count or pool size, so ``(seed, offset)`` pairs never collide."""

EPOCH_STRIDE = 10_007
"""The stride of training-shuffle seeds (one per epoch)."""


def derive(seed: int, offset: int, stride: int = STRIDE) -> int:
    """The seed for ``offset`` (a round, an epoch, a pool size) of a run seeded by ``seed``."""
    return int(seed) * stride + int(offset)


def generator(seed: int, offset: int, stride: int = STRIDE) -> torch.Generator:
    """A CPU generator seeded by :func:`derive`."""
    return torch.Generator().manual_seed(derive(seed, offset, stride))
