"""Sharding, gathering and agreement checks across ranks, all through ``trainer.strategy``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from lightning_dynamical.errors import ConfigError


def shard(items: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Contiguous, non-overlapping shard ``rank`` of ``items``: every item in exactly one shard, no padding."""
    n = len(items)
    start, stop = n * rank // world_size, n * (rank + 1) // world_size
    return list(items[start:stop])


def refuse_spawned_processes(trainer: Trainer) -> None:
    """Refuse a strategy whose launcher runs the fit only in child processes (``ddp_spawn``, ``ddp_fork``,
    ``ddp_notebook``, XLA): the caller's data module and loop would stay as they were, with no labeled samples
    added and no history. Called at setup, in the children; the caller's ``trainer.fit`` raises it inside torch's
    ``ProcessRaisedException``."""
    launcher = trainer.strategy.launcher
    if isinstance(launcher, _MultiProcessingLauncher):
        method = getattr(launcher, "_start_method", "spawn")
        raise ConfigError(f"ActiveLearningLoop does not run under strategies that start their processes by {method!r} "
                          f"(got {type(trainer.strategy).__name__}, e.g. strategy='ddp_spawn'): the rounds would run "
                          "only in child processes and this process's data module and loop would never see the "
                          "labels or the history; use strategy='ddp' (devices=N), whose rank 0 is this process")


def is_rank_zero() -> bool:
    """Whether this process is global rank zero (also before the trainer has set up its processes)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def reduce_sum(trainer: Trainer, tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks (identity on one process)."""
    if trainer.world_size == 1:
        return tensor
    return trainer.strategy.reduce(tensor.clone(), reduce_op="sum")


def gather_shards(trainer: Trainer, local: Tensor, total: int) -> Tensor:
    """Concatenate every rank's 1-D ``local`` tensor (shards made by :func:`shard` of ``total`` items)."""
    world = trainer.world_size
    if world == 1:
        return local
    sizes = [len(shard(range(total), r, world)) for r in range(world)]
    padded = local.new_zeros(max(sizes))
    padded[: local.numel()] = local
    gathered = trainer.strategy.all_gather(padded.to(trainer.strategy.root_device)).cpu()
    return torch.cat([gathered[r, : sizes[r]] for r in range(world)])


def digest(indices: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()


def check_agreement(trainer: Trainer, indices: Sequence[int], what: str) -> None:
    """Fail loudly unless every rank holds the same ``indices`` as rank 0."""
    if trainer.world_size == 1:
        return
    mine = digest(indices)
    theirs = trainer.strategy.broadcast(mine, src=0)
    agree = reduce_sum(trainer, torch.tensor([float(mine == theirs)], device=trainer.strategy.root_device))
    if int(agree.item()) != trainer.world_size:
        raise RuntimeError(f"Ranks disagree on {what}: rank {trainer.global_rank} has digest {mine[:12]}, "
                           f"rank 0 has {theirs[:12]}")


def sync_buffers(trainer: Trainer, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics drift apart under DDP, since each
    rank's last training forward updates its own), so all ranks score and evaluate the same model."""
    if trainer.world_size == 1:
        return
    buffers = dict(module.named_buffers())
    if not buffers:
        return
    source = trainer.strategy.broadcast({n: b.detach().cpu() for n, b in buffers.items()}, src=0)
    with torch.no_grad():
        for name, value in source.items():
            buffers[name].copy_(value)
