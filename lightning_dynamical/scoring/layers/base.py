"""The layer-rule contract and the helpers every rule shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_dynamical.scoring.layers.scratch import derived

Directions = Sequence[Mapping[str, Tensor]]
"""Directions ``v_k``, each mapping a parameter attribute (``"weight"``, ``"bias"``) to a tensor shaped like it."""

#: Cost of one element of memory traffic in multiply-adds (CPU matmuls do ~10x more multiply-adds per second
#: than memory-bound passes move elements). Only used to rank exact algorithms.
MEMORY_COST = 8.0


class LayerRule(ABC):
    """Per-sample gradient statistics of one layer type's parameters from ``(input, output gradient)``.

    ``a`` is the layer's input and ``d`` the gradient of a sum of per-sample losses w.r.t. its output, both
    batch-first; the layer must have been applied once to the batch.
    """

    #: Whether the input may hold several rows per sample on dim 0, sample-major (``x.view(-1, F)`` of a
    #: ``(B, T, F)`` tensor, as Hugging Face's ``Conv1D`` does); the rule then sees ``(B, rows, ...)``.
    grouped_rows: bool = False

    def supports(self, module: Any) -> bool:
        """Whether this module's configuration is covered exactly (otherwise the caller falls back)."""
        return True

    @abstractmethod
    def per_sample_gradients(self, module: Any, a: Tensor, d: Tensor,
                             wanted: Collection[str]) -> dict[str, Tensor]:
        """Explicit per-sample gradients ``{attr: (B, *param.shape)}`` for the attributes in ``wanted``."""

    def statistics(self, module: Any, a: Tensor, d: Tensor, wanted: Collection[str],
                   directions: Directions) -> tuple[Tensor, Tensor]:
        """``(||g_i||^2 (B,), g_i . v_k (B, K))`` summed over the attributes in ``wanted``."""
        return gradient_statistics(self.per_sample_gradients(module, a, d, wanted), directions)


def gradient_statistics(grads: Mapping[str, Tensor], directions: Directions) -> tuple[Tensor, Tensor]:
    """``(||g_i||^2 (B,), g_i . v_k (B, K))`` of explicit per-sample gradients ``{attr: (B, *shape)}``.

    The (small) gradients are concatenated so that one norm and one matmul cover them all.
    """
    names = list(grads)
    b = grads[names[0]].shape[0]
    g = torch.cat([grads[n].reshape(b, -1) for n in names], 1)
    flat = [derived("directions.flat", [v[n] for n in names], lambda *ts: torch.cat([t.reshape(-1) for t in ts]))
            for v in directions]
    return sqnorm(g), matvecs(g, flat)


def add_statistics(parts: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Sum of several ``(sqnorm, dots)`` pairs (parameters add up: both are sums over parameters)."""
    sq, dots = parts[0]
    for s, t in parts[1:]:
        sq, dots = sq + s, dots + t
    return sq, dots


def sqnorm(g: Tensor) -> Tensor:
    """Per-sample squared norm of ``g: (B, ...)`` in one fused pass."""
    return torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1).square()


def channels_last(t: Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels-last (NHWC) and not also NCHW (as after a permute from NHWC)."""
    return t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def flat_pair(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``u`` and ``v`` of the same shape as ``(B, N)`` rows in one element order, ``u``'s memory order where it is
    channels-last (then both are views when both are)."""
    if channels_last(u):
        u, v = u.permute(0, 2, 3, 1), v.permute(0, 2, 3, 1)
    return u.reshape(u.shape[0], -1), v.reshape(v.shape[0], -1)


def row_dots(u: Tensor, v: Tensor) -> Tensor:
    """``(B,)`` dot products of the rows of two same-shaped ``(B, ...)`` tensors (:func:`flat_pair`: no copy of
    NHWC views)."""
    return torch.linalg.vecdot(*flat_pair(u, v))


def direction_matrix(weights: Sequence[Tensor]) -> Tensor:
    """The flattened directions as the columns of an ``(N, K)`` matrix (``K >= 1``)."""
    if len(weights) == 1:  # the usual case (G_S alone): a view, no copy of the direction
        return weights[0].reshape(-1, 1)
    return torch.stack([w.reshape(-1) for w in weights], 1)


def matvecs(g: Tensor, weights: Sequence[Tensor]) -> Tensor:
    """``(B, K)`` dot products of per-sample gradients ``g: (B, N)`` with flattened directions."""
    if not weights:
        return g.new_zeros(g.shape[0], 0)
    return g @ direction_matrix(weights)


def bias_statistics(d_sum: Tensor, directions: Directions) -> tuple[Tensor, Tensor]:
    """Statistics of a bias whose per-sample gradient is ``d_sum: (B, n)``."""
    return gradient_statistics({"bias": d_sum}, [{"bias": v["bias"]} for v in directions])
