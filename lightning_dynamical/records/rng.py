"""Randomness: one rule for per-round (per-epoch, per-pool-size) seeds derived from a user's seed, and the global
RNG streams (torch, Python, CUDA) saved in the loop's checkpoint and restored at fit start."""

from __future__ import annotations

import random
from typing import Any

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


class RngState:
    """Captures the RNG streams for a checkpoint; a loaded state is applied by :meth:`restore` at fit start
    (loading happens before Lightning seeds anything, applying it then would be overwritten)."""

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self._to_restore = state

    def restore(self) -> None:
        """Apply the loaded state once (nothing when none was loaded)."""
        state, self._to_restore = self._to_restore, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        random.setstate((3, tuple(state["python"]), None))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
