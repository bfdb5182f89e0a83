"""Which torch functions the layer rules cover, and how a call's arguments become a rule's inputs.

Rules are matched by the *function* that consumes a parameter (``F.linear``, ``conv2d``, ``F.layer_norm``,
...), not by module type: a subclass, a functional call or a fused module (timm's ``BatchNormAct2d`` calls
``F.batch_norm`` and then its activation) is covered as long as the parameter goes straight into one of
these functions. :func:`register_op` adds a function with its binder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_dynamical.scoring.layers.base import LayerRule
from lightning_dynamical.scoring.layers.conv import ConvRule, ConvTransposeRule
from lightning_dynamical.scoring.layers.embedding import EmbeddingRule
from lightning_dynamical.scoring.layers.matmul import AddmmRule, LinearRule
from lightning_dynamical.scoring.layers.norm import BatchNormRule, GroupNormRule, LayerNormRule


@dataclass(eq=False)
class OpCall:
    """One call of a covered function: its rule, the layer configuration the rule reads, input and parameters."""

    op: str
    rule: LayerRule
    spec: Any
    a: Tensor
    roles: dict[str, Tensor]


Binder = Callable[[tuple, Mapping[str, Any]], OpCall | None]

RULES: dict[str, LayerRule] = {
    "linear": LinearRule(),
    "addmm": AddmmRule(),
    "conv": ConvRule(),
    "conv_transpose": ConvTransposeRule(),
    "batch_norm": BatchNormRule(),
    "layer_norm": LayerNormRule(),
    "group_norm": GroupNormRule(),
    "embedding": EmbeddingRule(),
}
"""The rule instance for each op family (tests swap entries to force an algorithm)."""


def _bind(args: tuple, kwargs: Mapping[str, Any], names: tuple[str, ...], **defaults: Any) -> dict[str, Any]:
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


def _roles(weight: Any, bias: Any) -> dict[str, Tensor]:
    return {k: v for k, v in (("weight", weight), ("bias", bias)) if isinstance(v, Tensor)}


def _linear(args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    p = _bind(args, kwargs, ("input", "weight", "bias"), bias=None)
    return OpCall("linear", RULES["linear"], SimpleNamespace(weight=p["weight"]), p["input"],
                  _roles(p["weight"], p["bias"]))


def _addmm(args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    p = _bind(args, kwargs, ("input", "mat1", "mat2"), beta=1, alpha=1)
    bias, w = p["input"], p["mat2"]
    if p["beta"] != 1 or p["alpha"] != 1 or not isinstance(w, Tensor) or not isinstance(bias, Tensor) \
            or bias.shape != w.shape[1:]:
        return None
    return OpCall("addmm", RULES["addmm"], SimpleNamespace(weight=w), p["mat1"], _roles(w, bias))


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * n


def _conv_spec(w: Tensor, stride: Any, padding: Any, dilation: Any, groups: Any) -> SimpleNamespace:
    """The configuration :class:`ConvRule` reads, of a convolution with weight ``w``."""
    n = w.ndim - 2
    return SimpleNamespace(weight=w, kernel_size=tuple(w.shape[2:]), stride=_tuple(stride, n),
                           padding=padding if isinstance(padding, str) else _tuple(padding, n),
                           dilation=_tuple(dilation, n), groups=int(groups), out_channels=w.shape[0],
                           padding_mode="zeros")


def _conv(args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    p = _bind(args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
              bias=None, stride=1, padding=0, dilation=1, groups=1)
    w = p["weight"]
    spec = _conv_spec(w, p["stride"], p["padding"], p["dilation"], p["groups"])
    return OpCall(f"conv{w.ndim - 2}d", RULES["conv"], spec, p["input"], _roles(w, p["bias"]))


def _conv_transpose(args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    p = _bind(args, kwargs, ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
              bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1)
    w = p["weight"]
    adjoint = _conv_spec(w, p["stride"], p["padding"], p["dilation"], p["groups"])
    spec = SimpleNamespace(weight=w, adjoint=adjoint, out_channels=w.shape[1] * adjoint.groups, padding_mode="zeros")
    return OpCall(f"conv_transpose{w.ndim - 2}d", RULES["conv_transpose"], spec, p["input"], _roles(w, p["bias"]))


def _batch_norm(args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    p = _bind(args, kwargs, ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
              weight=None, bias=None, training=False, momentum=0.1, eps=1e-5)
    spec = SimpleNamespace(running_mean=p["running_mean"], running_var=p["running_var"], eps=p["eps"],
                           training=bool(p["training"]))
    return OpCall("batch_norm", RULES["batch_norm"], spec, p["input"], _roles(p["weight"], p["bias"]))


def _layer_norm(args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    p = _bind(args, kwargs, ("input", "normalized_shape", "weight", "bias", "eps"), weight=None, bias=None,
              eps=1e-5)
    spec = SimpleNamespace(normalized_shape=tuple(p["normalized_shape"]), eps=p["eps"])
    return OpCall("layer_norm", RULES["layer_norm"], spec, p["input"], _roles(p["weight"], p["bias"]))


def _group_norm(args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    p = _bind(args, kwargs, ("input", "num_groups", "weight", "bias", "eps"), weight=None, bias=None, eps=1e-5)
    spec = SimpleNamespace(num_groups=int(p["num_groups"]), eps=p["eps"])
    return OpCall("group_norm", RULES["group_norm"], spec, p["input"], _roles(p["weight"], p["bias"]))


def _embedding(args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    p = _bind(args, kwargs, ("input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
                             "sparse"), padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False)
    w = p["weight"]
    pad = p["padding_idx"]
    if pad is not None and pad < 0:
        pad += w.shape[0]
    spec = SimpleNamespace(padding_idx=pad, num_embeddings=w.shape[0], max_norm=p["max_norm"],
                           scale_grad_by_freq=bool(p["scale_grad_by_freq"]))
    return OpCall("embedding", RULES["embedding"], spec, p["input"], _roles(w, None))


OPS: dict[Callable[..., Any], Binder] = {
    F.linear: _linear,
    torch.addmm: _addmm,
    torch.conv1d: _conv,
    torch.conv2d: _conv,
    torch.conv_transpose1d: _conv_transpose,
    torch.conv_transpose2d: _conv_transpose,
    F.batch_norm: _batch_norm,
    F.layer_norm: _layer_norm,
    F.group_norm: _group_norm,
    F.embedding: _embedding,
}


def register_op(func: Callable[..., Any], binder: Binder | None = None) -> Any:
    """Cover parameters passed to ``func``: ``binder(args, kwargs)`` returns the :class:`OpCall` the call is (a
    rule of :data:`RULES`, its configuration, the input and the parameters by role), or ``None`` for a use the
    rule does not cover. Call it as ``register_op(func, binder)`` or decorate: ``@register_op(func)``.

    The run-time proof still checks every call (one use per parameter, the batch on dim 0, a two-sample probe),
    so a binder only states what the call computes; a wrong one is caught there or by the brute-force tests.
    """
    if binder is None:
        def decorate(fn: Binder) -> Binder:
            OPS[func] = fn
            return fn
        return decorate
    OPS[func] = binder
    return binder


def bind(func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    """The covered call ``func(*args, **kwargs)`` is, or ``None`` (unknown function or unsupported use)."""
    binder = OPS.get(func)
    if binder is None:
        return None
    try:
        call = binder(args, kwargs)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    if call is None or not isinstance(call.a, Tensor) or not call.rule.supports(call.spec):
        return None
    return call
