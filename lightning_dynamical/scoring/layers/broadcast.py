"""Parameters without a layer of their own: added or multiplied into a batched tensor, or concatenated to it.

timm's ``pos_embed`` (``x + pos_embed``), layer-scale ``gamma`` (``x * gamma``, ConvNeXt's
``x.mul(gamma.reshape(1, -1, 1, 1))``) and ``cls_token`` (``torch.cat([cls_token.expand(B, -1, -1), x], 1)``)
reach the batch through view ops. The tracer records that chain of views (:class:`View`); a rule here turns
the call's output gradient ``d`` into the gradient of the view for each sample (``d`` or ``d * x`` summed over
the dimensions the view was broadcast along, or the slice of ``d`` the view was concatenated into) and maps it
back to the parameter through the adjoint of the views. These gradients are as small as the parameter, so
they are formed explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_dynamical.scoring.layers.base import LayerRule

#: View ops that keep the elements' row-major order: a chain of them maps a gradient back by a reshape.
RESHAPE_OPS: frozenset[Callable[..., Any]] = frozenset({
    Tensor.reshape, Tensor.view, Tensor.unsqueeze, Tensor.squeeze, Tensor.flatten, Tensor.contiguous, torch.reshape,
    torch.unsqueeze, torch.squeeze, torch.flatten,
})
#: Torch functions that only re-view a tensor (linear, value-preserving), followed through by the tracer.
VIEW_OPS: frozenset[Callable[..., Any]] = RESHAPE_OPS | {
    Tensor.expand, Tensor.permute, Tensor.transpose, torch.permute, torch.transpose,
}
ADD_OPS: frozenset[Callable[..., Any]] = frozenset({torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__})
MUL_OPS: frozenset[Callable[..., Any]] = frozenset({torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__})
CAT_OPS: frozenset[Callable[..., Any]] = frozenset({torch.cat, torch.concat, torch.concatenate})


@dataclass(eq=False)
class View:
    """A tensor made from a parameter by view ops only; ``batched`` when an ``expand`` gave it the batch on
    dim 0 (every sample then reads the same parameter values)."""

    param: Tensor
    steps: list[tuple[Callable[..., Any], tuple, dict[str, Any]]] = field(default_factory=list)
    batched: bool = False

    def then(self, func: Callable[..., Any], rest: tuple, kwargs: dict[str, Any], batch: int,
             before: Tensor, after: Tensor) -> View:
        """This view followed by ``func(view, *rest, **kwargs)``; an ``expand`` of dim 0 from 1 to the batch
        is recorded with size 1, so that the steps map one sample's gradient back to the parameter."""
        batched = self.batched
        if func is Tensor.expand and not batched and before.shape[:1] == (1,) and after.ndim == before.ndim \
                and after.shape[0] == batch and batch > 1:
            sizes = tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)) else rest
            rest, batched = ((1, *sizes[1:]),), True
        return View(self.param, [*self.steps, (func, rest, kwargs)], batched)

    def one_shape(self, value: Tensor) -> tuple[int, ...]:
        """The view's shape for one sample (dim 0 is 1 where the view is batched)."""
        return (1, *value.shape[1:]) if self.batched else tuple(value.shape)

    def to_parameter(self, g: Tensor) -> Tensor:
        """Per-sample gradients of the view ``(B, *one_shape)`` mapped to the parameter ``(B, *param.shape)``."""
        if all(func in RESHAPE_OPS and not any(isinstance(r, torch.dtype) for r in (*rest, *kwargs.values()))
               for func, rest, kwargs in self.steps):
            return g.reshape(g.shape[0], *self.param.shape)
        steps = self.steps

        def views(p: Tensor) -> Tensor:
            for func, rest, kwargs in steps:
                p = func(p, *rest, **kwargs)
            return p

        pullback = torch.func.vjp(views, self.param.detach())[1]
        return torch.func.vmap(lambda gi: pullback(gi)[0])(g)


@dataclass
class BroadcastSpec:
    """What a broadcast rule needs besides ``(a, d)``: the operation, the view, the view's shape for one
    sample, and for ``cat`` where along ``dim`` the view sits (``offset``, ``size``)."""

    kind: str
    view: View
    one_shape: tuple[int, ...]
    dim: int = 0
    offset: int = 0
    size: int = 0


def _broadcast_dims(full: tuple[int, ...], shape: tuple[int, ...]) -> list[int]:
    """The dimensions of ``full = (B, *R)`` along which a tensor of one-sample ``shape`` was broadcast."""
    rest = full[1:]
    padded = (1,) * (len(rest) + 1 - len(shape)) + tuple(shape)
    return [j + 1 for j, (p, r) in enumerate(zip(padded[1:], rest)) if p == 1 and r != 1]


def _reduce(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum ``t: (B, *R)`` per sample over the dimensions a tensor of one-sample ``shape`` was broadcast along."""
    dims = _broadcast_dims(tuple(t.shape), shape)
    if dims:
        t = t.sum(dims, keepdim=True)
    return t.reshape(t.shape[0], *shape)


def _reduce_product(d: Tensor, a: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``_reduce(d * a, shape)``, as one ``vecdot`` over the summed dimensions when they are adjacent (a per-channel
    scale on ``(B, C, H, W)``, a per-feature scale on ``(B, T, D)``): no reshuffled copy of the product."""
    dims = _broadcast_dims(tuple(d.shape), shape) if d.shape == a.shape else []
    if not dims or dims != list(range(dims[0], dims[-1] + 1)):
        return _reduce(d * a, shape)
    merged = (*d.shape[: dims[0]], -1, *d.shape[dims[-1] + 1:])
    return torch.linalg.vecdot(d.reshape(merged), a.reshape(merged), dim=dims[0]).reshape(d.shape[0], *shape)


class BroadcastRule(LayerRule):
    """``x + v``, ``x * v`` and ``cat([..., v, ...], dim)`` for a parameter view ``v``; ``a`` is ``x``."""

    def per_sample_gradients(self, spec: Any, a: Tensor, d: Tensor, wanted: Collection[str]) -> dict[str, Tensor]:
        if "weight" not in wanted:
            return {}
        if spec.kind == "cat":
            g = d.narrow(spec.dim, spec.offset, spec.size)
        elif spec.kind == "mul":
            return {"weight": spec.view.to_parameter(_reduce_product(d, a, spec.one_shape))}
        else:
            g = d
        return {"weight": spec.view.to_parameter(_reduce(g, spec.one_shape))}


BROADCAST = BroadcastRule()


def bind_broadcast(func: Callable[..., Any], args: tuple, kwargs: dict[str, Any], out: Any, value: Tensor,
                   view: View, batch: int) -> tuple[str, BroadcastSpec, Tensor] | None:
    """``(op, spec, x)`` when ``func(*args, **kwargs)`` feeds the parameter view ``value`` into the batched
    tensor ``x`` by ``+``, ``*`` or ``cat`` along a dimension other than the batch; else ``None``."""
    if not isinstance(out, Tensor) or out.ndim == 0 or out.shape[0] != batch:
        return None
    if func in ADD_OPS or func in MUL_OPS:
        if kwargs or len(args) != 2 or not all(isinstance(t, Tensor) for t in args):
            return None
        x = args[1] if args[0] is value else args[0]
        if x is value or x.ndim == 0 or x.shape[0] != batch or out.shape != x.shape or value.ndim > x.ndim:
            return None
        if value.ndim == x.ndim and value.shape[0] != (batch if view.batched else 1):
            return None
        return ("add" if func in ADD_OPS else "mul"), BroadcastSpec("add" if func in ADD_OPS else "mul", view,
                                                                   view.one_shape(value)), x
    if func in CAT_OPS and args and isinstance(args[0], (list, tuple)):
        tensors = list(args[0])
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not view.batched or sum(t is value for t in tensors) != 1 or not isinstance(dim, int):
            return None
        dim = dim % out.ndim
        others = [t for t in tensors if t is not value]
        if dim == 0 or not others or any(t.ndim != out.ndim or t.shape[0] != batch for t in tensors):
            return None
        offset = sum(t.shape[dim] for t in tensors[: [t is value for t in tensors].index(True)])
        return "cat", BroadcastSpec("cat", view, view.one_shape(value), dim, offset, value.shape[dim]), others[0]
    return None
