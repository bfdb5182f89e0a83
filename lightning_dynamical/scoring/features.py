"""Penultimate features and logits in one forward: the inputs of the last ``nn.Linear`` head."""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from lightning_dynamical.scoring.common import last_linear_name
from lightning_dynamical.tasks.batches import Inputs, forward_logits


def head_of(model: nn.Module) -> nn.Linear:
    """The model's last registered ``nn.Linear`` (its classifier head)."""
    return cast(nn.Linear, model.get_submodule(last_linear_name(model)))


def features_and_logits(model: nn.Module, inputs: Inputs) -> tuple[Tensor, Tensor]:
    """``(h, logits)`` where ``h`` is the (flattened) input of the head and ``logits`` the model's.

    The caller chooses grad mode and model mode. The head must be applied to ``(batch, features)``.
    """
    head = head_of(model)
    seen: list[Tensor] = []
    handle = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        logits = forward_logits(model, inputs)
    finally:
        handle.remove()
    if len(seen) != 1 or seen[-1].ndim != 2:
        raise ValueError("The classifier head must be called once per forward on (batch, features) inputs")
    return seen[-1], logits
