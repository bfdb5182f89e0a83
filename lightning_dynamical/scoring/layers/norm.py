"""Normalisation layers ``y = xhat * weight + bias``: per-sample gradients ``d * xhat`` and ``d``, reduced.

Their per-sample gradients are as small as the layer's channels, so they are always formed explicitly.
``xhat`` comes from the layer's own functional forward without the affine part; BatchNorm's sums come from the
framework's BatchNorm backward instead.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_dynamical.scoring.layers.base import LayerRule
from lightning_dynamical.scoring.layers.scratch import derived


class _NormRule(LayerRule):
    @abstractmethod
    def normalized(self, module: Any, a: Tensor) -> Tensor:
        """``xhat``: the layer's forward without the affine part."""

    def reduce(self, module: Any, t: Tensor) -> Tensor:
        """Sum ``t`` (shaped like the output) over all but the batch and the channel dimension."""
        return t.reshape(t.shape[0], t.shape[1], -1).sum(2)

    def per_sample_gradients(self, module: Any, a: Tensor, d: Tensor,
                             wanted: Collection[str]) -> dict[str, Tensor]:
        out = {}
        if "weight" in wanted:
            out["weight"] = self.reduce_product(module, d, self.normalized(module, a))
        if "bias" in wanted:
            out["bias"] = self.reduce(module, d)
        return out

    def reduce_product(self, module: Any, d: Tensor, xhat: Tensor) -> Tensor:
        """``reduce(d * xhat)`` as one ``vecdot`` over the reduced dimensions."""
        b, c = d.shape[:2]
        return torch.linalg.vecdot(d.reshape(b, c, -1), xhat.reshape(b, c, -1))


class BatchNormRule(LayerRule):
    """``nn.BatchNorm1d/2d/3d`` normalising with its running statistics (eval mode).

    ``xhat = (a - mean) / sqrt(var + eps)`` with per-channel constants, so the weight gradient is
    ``sum_s d (a - mean)`` scaled per channel.
    """

    def supports(self, module: Any) -> bool:
        return not module.training and module.running_mean is not None and module.running_var is not None

    def per_sample_gradients(self, module: Any, a: Tensor, d: Tensor,
                             wanted: Collection[str]) -> dict[str, Tensor]:
        """``sum_s d (a - mean) / sqrt(var + eps)`` and ``sum_s d`` per sample and channel, without a product tensor
        on large maps: the framework's own BatchNorm backward with the batch folded into the channels (each sample a
        channel with the layer's running statistics), one pass; on maps of fewer than :data:`FOLDED_POSITIONS`
        positions, where that kernel's per-channel overhead dominates (4x slower than this on 2x2 maps on a CPU), one
        ``vecdot`` with the centred input."""
        b, c = a.shape[:2]
        a3, d3 = a.reshape(b, c, -1), d.reshape(b, c, -1)
        out = {}
        if a3.shape[2] < FOLDED_POSITIONS:
            if "weight" in wanted:  # in float32 at least, as the framework's kernel accumulates
                wide = torch.promote_types(a.dtype, torch.float32)
                centred = a3.to(wide) - module.running_mean.to(wide).view(1, c, 1)
                invstd = derived(("batch_norm.invstd", module.eps, wide), (module.running_var,),
                                 lambda var: (var.to(wide) + module.eps).rsqrt())
                out["weight"] = torch.linalg.vecdot(d3.to(wide), centred).mul_(invstd).to(a.dtype)
            if "bias" in wanted:
                out["bias"] = d3.sum(2)
            return out
        mean, var = (derived(("batch_norm.folded", b), (t,), lambda s: s.repeat(b))
                     for t in (module.running_mean, module.running_var))
        _, weight, bias = torch.ops.aten.native_batch_norm_backward(
            d3.reshape(1, b * c, -1), a3.reshape(1, b * c, -1), a.new_ones(b * c), mean, var, None, None, False,
            module.eps, [False, "weight" in wanted, "bias" in wanted])
        if "weight" in wanted:
            out["weight"] = weight.reshape(b, c)
        if "bias" in wanted:
            out["bias"] = bias.reshape(b, c)
        return out


#: Positions per channel from which :class:`BatchNormRule` folds the batch into the framework's BatchNorm backward
#: (equal times at 4x4 on a CPU; the folded kernel 2x faster at 16x16 and above, 3-4x slower at 2x2).
FOLDED_POSITIONS = 16


class GroupNormRule(_NormRule):
    """``nn.GroupNorm`` (per-sample statistics, so exact in any mode)."""

    def normalized(self, module: Any, a: Tensor) -> Tensor:
        return F.group_norm(a, module.num_groups, None, None, module.eps)


class LayerNormRule(_NormRule):
    """``nn.LayerNorm`` over the trailing ``normalized_shape`` dimensions."""

    def normalized(self, module: Any, a: Tensor) -> Tensor:
        """With a weight of ones: the same values (times one is exact), from the framework's vectorised affine
        kernel, about twice as fast on a CPU as its kernel without weight."""
        return F.layer_norm(a, module.normalized_shape, a.new_ones(module.normalized_shape), None, module.eps)

    def reduce(self, module: Any, t: Tensor) -> Tensor:
        return t.reshape(t.shape[0], -1, *module.normalized_shape).sum(1)

    def reduce_product(self, module: Any, d: Tensor, xhat: Tensor) -> Tensor:
        shape = (d.shape[0], -1, *module.normalized_shape)
        return torch.linalg.vecdot(d.reshape(shape), xhat.reshape(shape), dim=1)
