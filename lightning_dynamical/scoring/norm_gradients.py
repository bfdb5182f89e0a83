"""Dense output gradients for BatchNorm and InstanceNorm over a batch of one sample.

PyTorch's CPU backward of ``batch_norm`` (2-d and 3-d maps, eval and train mode, and ``instance_norm``, which runs
it with the batch folded into the channels) returns wrong gradients for the input, weight and bias when the batch has
one sample and the output gradient has channels-last strides with another batch stride than a dense tensor's: one
that a broadcast op expanded, as ``(y.flatten(2).transpose(1, 2) * w).sum()`` hands back (measured on torch 2.14.1:
errors of the order of the gradient itself; batches of two and dense gradients are exact). Batches of one sample
occur in every scoring path: the pool's or the labeled set's last batch, the per-sample loop. Every forward the
scoring differentiates registers :func:`dense_gradient` on these calls' outputs (:func:`guard`), so that their
backward reads a dense copy of such a gradient; dense gradients pass through unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

#: The functions whose backward runs the affected kernel.
NORMS = frozenset({F.batch_norm, torch.batch_norm, F.instance_norm, torch.instance_norm})


def _dense_strides(shape: tuple[int, ...], order: tuple[int, ...]) -> tuple[int, ...]:
    """Strides of a dense tensor of ``shape`` whose dims are laid out in ``order`` (outermost first)."""
    strides = [0] * len(shape)
    step = 1
    for dim in reversed(order):
        strides[dim] = step
        step *= shape[dim]
    return tuple(strides)


def dense_gradient(g: Tensor) -> Tensor | None:
    """A dense copy of a one-sample gradient of a 2-d or 3-d map whose strides are neither contiguous nor
    channels-last; ``None`` (keep it) otherwise."""
    if g.ndim not in (4, 5) or g.shape[0] != 1:
        return None
    shape, last = tuple(g.shape), (0, *range(2, g.ndim), 1)
    if g.stride() in (_dense_strides(shape, tuple(range(g.ndim))), _dense_strides(shape, last)):
        return None
    return g.contiguous()


def guard(func: Any, out: Any) -> None:
    """Register :func:`dense_gradient` on the output of a BatchNorm or InstanceNorm call over one sample."""
    if func in NORMS and isinstance(out, Tensor) and out.requires_grad and out.ndim in (4, 5) and out.shape[0] == 1:
        out.register_hook(dense_gradient)


class DenseNormGradients(TorchFunctionMode):
    """Guard every BatchNorm and InstanceNorm call of a forward (see the module docstring)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        guard(func, out)
        return out
