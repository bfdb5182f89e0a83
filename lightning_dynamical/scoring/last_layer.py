"""Closed form for the classifier head: per-sample gradients of the last ``nn.Linear`` at inference cost.

For ``logits = W h + b`` and the task's loss at its pseudo targets, the gradient w.r.t. the logits is the task's
:meth:`~lightning_dynamical.tasks.base.Task.output_gradient` ``e`` (``softmax(logits) - onehot(argmax)`` for
classification's ``CE(logits, argmax logits)``), so ``g_W = e h^T`` and ``g_b = e``. One forward (no backward)
gives ``h`` and ``e``; the linear rule turns them into ``||g||^2`` and ``g . v``. The rows of ``e`` are
per-sample gradients only for a loss that sums per-sample losses
(:attr:`~lightning_dynamical.tasks.base.Task.sums_over_samples`); other tasks are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lightning_dynamical.scoring.engine import Engine, ParameterPath, unproven_task
from lightning_dynamical.scoring.trace import Watch, probe_evidence, prove, run_probe
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import Inputs, batch_size, forward_logits
from lightning_dynamical.tasks.classification import CLASSIFICATION
from lightning_dynamical.tasks.classification import softmax_minus_onehot as softmax_minus_onehot  # moved there


class NotLastLayerError(ValueError):
    """The selected parameters, or the model, do not fit the last-layer closed form."""


def output_gradient(logits: Tensor, task: Task = CLASSIFICATION, inputs: Inputs | None = None) -> tuple[Tensor, Tensor]:
    """``(e, y)`` with ``y`` the task's pseudo targets of the batch whose model ``inputs`` gave ``logits`` and ``e``
    d loss / d logits per sample at ``y`` (``softmax(logits) - onehot(argmax logits)`` for classification)."""
    y = task.batch_pseudo_targets(logits, inputs)
    return task.output_gradient(logits, y), y


class LastLayerEngine(Engine):
    """Exact scores for the head's parameters from one forward without backward (for ``params="last_layer"``).

    Proven on every batch like the fast engine: the selected parameters must be consumed once, by the one
    ``F.linear`` call whose output the model returns as its logits, with the samples on dim 0.
    """

    name = "last_layer"

    def __init__(self, chunk_size: int | None = None) -> None:
        super().__init__()
        self.chunk_size = chunk_size  # accepted for a uniform constructor; the closed form needs no chunks

    def batch_statistics(
        self,
        model: nn.Module,
        inputs: Inputs,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
        task: Task = CLASSIFICATION,
    ) -> tuple[Tensor, Tensor, Tensor]:
        why = unproven_task(task)
        if why:
            raise NotLastLayerError(f"engine='last_layer' cannot prove its closed form here ({why}). "
                                    "Use engine='auto' or 'fast'.")
        watch = Watch(params, batch=batch_size(inputs), expand=False)
        with torch.enable_grad(), watch:
            logits = forward_logits(model, inputs, task)
        b = logits.shape[0]
        probe = run_probe(model, inputs, params, expand=False, task=task) if b > 1 else None
        evidence = probe_evidence(watch, logits, probe)
        if not evidence.conclusive and not evidence.logits_differ:  # the head's output rows are the logits' rows:
            evidence = dataclasses.replace(evidence, forward=None)  # equal samples leave nothing to tell apart there
        covered, reasons = prove(watch, logits, params, evidence)
        heads = [s for s in watch.sites if s.out is logits and s.call.op == "linear"]
        others = [n for n in params if len(heads) != 1 or n not in heads[0].names.values()]
        if others or reasons:
            watch.release()
        if not heads:
            raise NotLastLayerError(
                "engine='last_layer' needs logits that are the output of one linear layer (F.linear); this model's "
                "are not (e.g. a convolution head, or an op after the head). Use engine='auto' or 'fast'.")
        if others:
            raise NotLastLayerError(
                "engine='last_layer' scores only the parameters of the linear layer whose output is the logits; "
                f"the selection also has {others}. Use params='last_layer', or engine='auto' or 'fast'.")
        if reasons:
            why = "; ".join(f"{n}: {r}" for n, r in reasons.items())
            raise NotLastLayerError(f"engine='last_layer' cannot prove its closed form here ({why}). "
                                    "Use engine='auto' or 'fast'.")
        site = heads[0]
        with torch.no_grad():
            e, y = output_gradient(logits.detach(), task, inputs)
            local = site.local(directions)
            sq, dots = site.call.rule.statistics(site.call.spec, site.call.a.detach(), e, site.wanted, local)
        self.paths = {n: ParameterPath(n, "last_layer") for n in params}
        watch.release()
        for one in probe or ():
            one.watch.release()
        return sq, dots, y
