"""Closed form for the classifier head: per-sample gradients of the last ``nn.Linear`` at inference cost.

For ``logits = W h + b`` and ``CE(logits, argmax logits)``, the gradient w.r.t. the logits is
``e = softmax(logits) - onehot(argmax)``, so ``g_W = e h^T`` and ``g_b = e``. One forward without autograd
gives ``h`` and ``e``; the Linear layer rule turns them into ``||g||^2`` and ``g . v``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lightning_dynamical.scoring.common import last_linear_name
from lightning_dynamical.scoring.engine import Engine
from lightning_dynamical.scoring.features import features_and_logits
from lightning_dynamical.scoring.layers import rule_for


class NotLastLayerError(ValueError):
    """The selected parameters, or the model, do not fit the last-layer closed form."""


def head_attributes(model: nn.Module, params: Mapping[str, nn.Parameter]) -> dict[str, str]:
    """``{attr: name}`` of the head's selected parameters; raises unless every selected one is the head's."""
    try:
        prefix = last_linear_name(model)
    except ValueError as err:
        raise NotLastLayerError(str(err)) from err
    head = model.get_submodule(prefix)
    attrs, others = {}, []
    for name, p in params.items():
        attr = next((a for a in ("weight", "bias") if getattr(head, a, None) is p), None)
        if attr is None:
            others.append(name)
        else:
            attrs[attr] = name
    if others or rule_for(head) is None:
        raise NotLastLayerError(
            f"engine='last_layer' scores only the parameters of the classifier head {prefix!r} (a plain "
            f"nn.Linear), but the selection also has {others}. Use params='last_layer', or engine='auto' or "
            "'fast' for other parameters.")
    ids = {id(params[name]) for name in attrs.values()}
    if any(id(p) in ids for m in model.modules() if m is not head for p in m._parameters.values()):
        raise NotLastLayerError(f"the head {prefix!r} shares parameters with other modules; its gradient is not "
                                "the closed form. Use engine='auto' or 'fast'.")
    return attrs


def output_gradient(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(softmax(logits) - onehot(y), y)`` with ``y = argmax logits``: d CE_sum / d logits per sample."""
    y = logits.argmax(1)
    e = torch.softmax(logits, 1)
    e[torch.arange(y.shape[0], device=y.device), y] -= 1
    return e, y


class LastLayerEngine(Engine):
    """Exact scores for the head's parameters from one ``no_grad`` forward (for ``params="last_layer"``)."""

    name = "last_layer"

    def __init__(self, chunk_size: int | None = None) -> None:
        self.chunk_size = chunk_size  # accepted for a uniform constructor; the closed form needs no chunks

    def batch_statistics(
        self,
        model: nn.Module,
        x: Tensor,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
    ) -> tuple[Tensor, Tensor, Tensor]:
        attrs = head_attributes(model, params)
        head = model.get_submodule(last_linear_name(model))
        outputs: list[Tensor] = []
        handle = head.register_forward_hook(lambda _m, _args, out: outputs.append(out))
        try:
            with torch.no_grad():
                h, logits = features_and_logits(model, x)
        except ValueError as err:
            raise NotLastLayerError(f"engine='last_layer' cannot use this model's head: {err}") from err
        finally:
            handle.remove()
        if len(outputs) != 1 or outputs[0] is not logits:
            raise NotLastLayerError("engine='last_layer' needs the model to return the head's output as logits")
        e, y = output_gradient(logits)
        local = [{attr: v[name] for attr, name in attrs.items()} for v in directions]
        with torch.no_grad():
            sq, dots = rule_for(head).statistics(head, h, e, attrs, local)
        return sq, dots, y
