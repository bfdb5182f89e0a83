"""Closed form for the classifier head: per-sample gradients of the last ``nn.Linear`` at inference cost.

For ``logits = W h + b`` and ``CE(logits, argmax logits)``, the gradient w.r.t. the logits is
``e = softmax(logits) - onehot(argmax)``, so ``g_W = e h^T`` and ``g_b = e``. One forward (no backward)
gives ``h`` and ``e``; the linear rule turns them into ``||g||^2`` and ``g . v``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lightning_dynamical.scoring.engine import Engine, ParameterPath
from lightning_dynamical.scoring.trace import Watch, prove, run_probe
from lightning_dynamical.tasks.batches import Inputs, batch_size, forward_logits


class NotLastLayerError(ValueError):
    """The selected parameters, or the model, do not fit the last-layer closed form."""


def output_gradient(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(softmax(logits) - onehot(y), y)`` with ``y = argmax logits``: d CE_sum / d logits per sample."""
    y = logits.argmax(1)
    return softmax_minus_onehot(torch.softmax(logits, 1), y), y


def softmax_minus_onehot(p: Tensor, y: Tensor) -> Tensor:
    """``p - onehot(y)`` as a new tensor: d CE_sum / d logits per sample, for softmax outputs ``p`` and labels ``y``."""
    e = p.clone()
    e[torch.arange(y.shape[0], device=y.device), y] -= 1
    return e


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
    ) -> tuple[Tensor, Tensor, Tensor]:
        watch = Watch(params, batch=batch_size(inputs), expand=False)
        with torch.enable_grad(), watch:
            logits = forward_logits(model, inputs)
        b = logits.shape[0]
        probe = run_probe(model, inputs, params, expand=False) if b > 1 else None
        covered, reasons = prove(watch, logits, params, probe)
        heads = [s for s in watch.sites if s.out is logits and s.call.op == "linear"]
        others = [n for n in params if len(heads) != 1 or n not in heads[0].names.values()]
        if others or reasons:
            watch.release()
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
            e, y = output_gradient(logits.detach())
            local = site.local(directions)
            sq, dots = site.call.rule.statistics(site.call.spec, site.call.a.detach(), e, site.wanted, local)
        self.paths = {n: ParameterPath(n, "last_layer") for n in params}
        watch.release()
        if probe is not None:
            probe[0].release()
        return sq, dots, y
