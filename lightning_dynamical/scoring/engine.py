"""The contract every per-sample gradient engine fulfils, and the record of which path each parameter took."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from tqdm.auto import tqdm

from lightning_dynamical.scoring.layers.scratch import reusing
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import LABEL_KEY, Inputs, batch_inputs, batch_size, to_model
from lightning_dynamical.tasks.classification import CLASSIFICATION

#: Prefix of the ``torch.profiler`` ranges the engines open (``benchmarks/scoring.py --profile`` groups by them).
PHASE_PREFIX = "lightning_dynamical/"


def phase(name: str) -> AbstractContextManager[Any]:
    """A profiler range ``lightning_dynamical/<name>`` while a profiler runs, else nothing (a range costs a few
    microseconds even unprofiled, and the engine opens one per covered call)."""
    if not torch._C._autograd._profiler_enabled():
        return contextlib.nullcontext()
    return torch.profiler.record_function(PHASE_PREFIX + name)


#: Paths that cost about a training step; every other path is reported as slow.
FAST_PATHS = ("fast", "unused", "last_layer")


@dataclass
class PoolStatistics:
    """Per-sample quantities of a pool, aligned with the loader's order.

    ``sqnorm[i] = ||g_i||^2`` and ``dots[i, k] = g_i . directions[k]``, where ``g_i`` is the gradient of the
    task's loss of sample ``i`` at its pseudo target over the selected parameters (``CE_sum(f(x_i), argmax f(x_i))``
    for classification), and ``pseudo_labels[i]`` is that pseudo target (``argmax f(x_i)``; a row of 0/1 for
    multi-label; a class per token, ``ignore_index`` at padding, for token classification, whose batches are padded
    to the longest by :meth:`~lightning_dynamical.tasks.base.Task.concat_targets`).
    """

    sqnorm: Tensor
    dots: Tensor
    pseudo_labels: Tensor


@dataclass(frozen=True)
class ParameterPath:
    """How one parameter was scored: ``path`` (``"fast (linear)"``, ``"unused"``, ``"last_layer"``, ``"vmap"``,
    ``"loop"``) and, for the slow paths, ``reason``."""

    name: str
    path: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.path}" + (f" ({self.reason})" if self.reason else "")


def unproven_task(task: Task) -> str | None:
    """Why the closed forms cannot cover ``task``'s loss, or ``None`` when they can: they need the batch loss to
    be the sum of per-sample losses, each reading its own row of the logits (``Task.sums_over_samples``), so that
    the rows of the output gradients are the per-sample gradients."""
    if task.sums_over_samples:
        return None
    return f"the {task.name} task's loss is not a sum of per-sample losses (Task.sums_over_samples is False)"


class Engine(ABC):
    """Computes :class:`PoolStatistics` without storing per-sample gradients for the whole pool."""

    name: str = "engine"

    def __init__(self) -> None:
        self.paths: dict[str, ParameterPath] = {}
        self._warned: set[frozenset[str]] = set()

    @abstractmethod
    def batch_statistics(
        self,
        model: nn.Module,
        inputs: Inputs,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
        task: Task = CLASSIFICATION,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(sqnorm (B,), dots (B, K), pseudo_labels (B, ...))`` for one batch's inputs on the model's device, for
        ``task``'s loss and pseudo targets."""

    def pool_statistics(
        self,
        model: nn.Module,
        loader: Iterable[Any],
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]] = (),
        progress: bool = False,
        label_key: str = LABEL_KEY,
        task: Task = CLASSIFICATION,
    ) -> PoolStatistics:
        """Run :meth:`batch_statistics` over a loader for ``task``; results are gathered on the CPU. The closed forms'
        temporaries are reused from batch to batch (:mod:`~lightning_dynamical.scoring.layers.scratch`) and freed
        at the end. Empty batches are skipped."""
        sq, dots, labels = [], [], []
        bar = tqdm(loader, desc=f"Scoring pool ({self.name})", leave=False, disable=not progress, unit="batch")
        with reusing():
            for batch in bar:
                inputs = to_model(batch_inputs(batch, label_key), model)
                if batch_size(inputs) == 0:  # nothing to score (a sampler may yield an empty batch)
                    continue
                s, d, y = self.batch_statistics(model, inputs, params, directions, task)
                sq.append(s.detach().cpu())
                dots.append(d.detach().cpu())
                labels.append(y.detach().cpu())
        if not sq:
            dtype = next(iter(params.values())).dtype
            return PoolStatistics(torch.zeros(0, dtype=dtype), torch.zeros(0, len(directions), dtype=dtype),
                                  torch.zeros(0, dtype=torch.long))
        return PoolStatistics(torch.cat(sq), torch.cat(dots), task.concat_targets(labels))

    def explain(self, model: nn.Module, inputs: Inputs, params: Mapping[str, nn.Parameter],
                task: Task = CLASSIFICATION) -> list[ParameterPath]:
        """Score one batch and return every selected parameter's path (model mode as the caller set it)."""
        self.batch_statistics(model, inputs, params, [], task)
        return [self.paths[n] for n in params]

    def record(self, paths: Mapping[str, ParameterPath]) -> None:
        """Remember each parameter's path for this batch; warn once per set of parameters on a slow path."""
        self.paths = dict(paths)
        slow = {n: p for n, p in paths.items() if not p.path.startswith(FAST_PATHS)}
        key = frozenset(f"{n}:{p.path}" for n, p in slow.items())
        if not slow or key in self._warned:
            return
        self._warned.add(key)
        counts: dict[str, int] = {}
        for p in slow.values():
            counts[p.path] = counts.get(p.path, 0) + 1
        shown = [f"  {p}"[:240] for p in list(slow.values())[:3]]
        more = [f"  ... and {len(slow) - 3} more"] if len(slow) > 3 else []
        rank_zero_warn(f"{self.name} engine: {len(slow)} of {len(paths)} selected parameters are scored on a slow "
                       f"exact path ({', '.join(f'{k}: {v}' for k, v in counts.items())}); scores stay exact.\n"
                       + "\n".join(shown + more)
                       + "\nDynamicAL.explain(model, batch) lists every parameter's path and reason.",
                       category=UserWarning)
