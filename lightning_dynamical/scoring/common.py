"""Pieces every scoring engine shares: parameter selection, eval mode, summed gradients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.tasks.batches import LABEL_KEY, batch_inputs, batch_targets, forward_logits, to_model

ParamSpec = str | Sequence[str] | None
"""Which parameters form theta: ``None`` (all trainable), ``"last_layer"``, or a list of names."""


def last_linear_name(model: nn.Module) -> str:
    """Qualified name of the last ``nn.Linear`` registered in the model (the classifier head)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError("params='last_layer' needs an nn.Linear classifier head; the model has none")
    return names[-1]


def select_parameters(model: nn.Module, params: ParamSpec = None) -> dict[str, nn.Parameter]:
    """The named trainable parameters that form theta (shared parameters appear once)."""
    named = dict(model.named_parameters())
    if params is None:
        chosen = [n for n, p in named.items() if p.requires_grad]
    elif params == "last_layer":
        prefix = last_linear_name(model) + "."
        chosen = [n for n in named if n.startswith(prefix) and named[n].requires_grad]
    else:
        if isinstance(params, str):
            raise ValueError(f"params must be None, 'last_layer' or a list of names, got {params!r}")
        unknown = [n for n in params if n not in named]
        if unknown:
            raise ValueError(f"Unknown parameter names {unknown}; the model has {sorted(named)}")
        chosen = list(dict.fromkeys(params))
    if not chosen:
        raise ValueError(f"No trainable parameters selected by params={params!r}")
    return {n: named[n] for n in chosen}


def summed_gradient(
    model: nn.Module,
    loader: Iterable[Any],
    params: Mapping[str, nn.Parameter],
    pseudo_labels: bool = False,
    label_key: str = LABEL_KEY,
) -> dict[str, Tensor]:
    """Sum over a loader of grad_theta CE_sum(model(x), y), one batched backward per batch.

    With ``pseudo_labels`` the targets are ``argmax model(x)`` (for a set of queried pool samples).
    The caller sets the model's mode (eval for scoring); parameters' ``.grad`` is left untouched.
    """
    names = list(params)
    tensors = [params[n] for n in names]
    total = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in tensors]
    for batch in loader:
        inputs = to_model(batch_inputs(batch, label_key), model)
        with torch.enable_grad():
            logits = forward_logits(model, inputs)
            y = logits.argmax(1) if pseudo_labels else batch_targets(batch, label_key).to(logits.device)
            loss = nn.functional.cross_entropy(logits, y, reduction="sum")
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for acc, g in zip(total, grads):
            if g is not None:
                acc.add_(g)
    return dict(zip(names, total))
