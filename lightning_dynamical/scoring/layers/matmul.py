"""Layers computing ``out_t = W a_t (+ b)`` per position ``t`` (per group): the direct and ghost forms.

With per-sample columns ``A: (B, G, T, D)`` and output gradients ``D: (B, G, T, p)``, the weight gradient of
sample ``i`` is ``g_i = D_i^T A_i`` per group. Either form it (``T D p`` multiply-adds, matmul with inner size
``T``) or use the ghost norm ``||g_i||^2 = sum_{t,t'} (a_t . a_t')(d_t . d_t')`` (``T^2 (D + p)``) with
``g_i . W = sum_t d_t . (W a_t)``, the layer's own forward with the direction's weights.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from lightning_dynamical.scoring.layers.base import (
    MEMORY_COST,
    Directions,
    LayerRule,
    add_statistics,
    bias_statistics,
    direction_matrix,
    row_dots,
)
from lightning_dynamical.scoring.layers.scratch import derived, scratch

#: Matmul inner size below which a matmul runs proportionally below peak throughput.
EFFICIENT_INNER = 64
#: Output elements per matmul below which it runs proportionally below peak (a CPU's small per-sample weight
#: gradients, 3-channel stems: their throughput measured proportional to the output size up to about this).
EFFICIENT_OUTPUT = 4096


def slowdown(inner: int, outputs: int) -> float:
    """Estimated time per multiply-add of a matmul with this inner size and output elements, relative to peak."""
    return 1.0 / (min(1.0, inner / EFFICIENT_INNER) * min(1.0, outputs / EFFICIENT_OUTPUT))


def prefer_ghost(positions: int, fan_in: int, fan_out: int, directions: int) -> bool:
    """Whether the ghost form is cheaper than forming ``g_i`` (estimated per sample and group)."""
    t, n_in, n_out = positions, fan_in, fan_out
    direct = t * n_in * n_out * slowdown(t, n_in * n_out) + MEMORY_COST * n_in * n_out * (2 + directions)
    ghost = t * t * (n_in + n_out) + directions * t * n_in * n_out
    return ghost < direct


#: Elements of per-sample gradients :func:`direct_statistics` forms at a time when the batch's exceed
#: :data:`DIRECT_LIMIT`: a chunk stays in cache for its norm and dot products instead of a round trip through
#: memory (measured 5-10% faster on ViT's dense layers on a CPU, slower below a few MB in all).
DIRECT_CHUNK = 2**19
DIRECT_LIMIT = 2**21


def direct_statistics(cols: Tensor, dpos: Tensor, weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Form ``g_i = D_i^T A_i`` (or its transpose), then its norm and one matvec per direction (weights shaped
    ``(G, p, D)``), a chunk of samples at a time into one reused buffer when the batch's ``g`` is large."""
    b, groups, _, fan_in = cols.shape
    p = dpos.shape[-1]
    per = groups * p * fan_in
    step = b if b * per <= DIRECT_LIMIT or per > DIRECT_CHUNK else DIRECT_CHUNK // per
    left, right = dpos, cols
    if p > fan_in or cols.stride(-2) == 1:  # g_i transposed (measured on a CPU: up to 1.6x faster for
        # position-contiguous convolution columns, 5% for dense layers whose outputs outnumber their inputs)
        left, right = cols, dpos
        weights = [derived("matmul.transposed", (w,), lambda t: t.transpose(-1, -2).contiguous()) for w in weights]
    buf = scratch("matmul.g", (min(step, b) * groups, left.shape[-1], right.shape[-1]), cols)
    norms = cols.new_empty(b)
    dots = cols.new_empty(b, len(weights))
    matrix = direction_matrix(weights) if weights else None
    for i in range(0, b, step):  # results written in place: no temporaries per chunk
        n = min(step, b - i)
        g = buf[: n * groups]
        torch.bmm(left[i: i + n].flatten(0, 1).transpose(-1, -2), right[i: i + n].flatten(0, 1), out=g)
        g = g.view(n, -1)
        torch.linalg.vector_norm(g, dim=1, out=norms[i: i + n])
        if matrix is not None:
            torch.mm(g, matrix, out=dots[i: i + n])
    return norms.square_(), dots


def ghost_norm(cols: Tensor, dpos: Tensor, bias: bool = False) -> Tensor:
    """``sum_{t,t'} (a_t . a_t')(d_t . d_t')`` per sample, without forming ``g_i``; with ``bias``, of the weight and
    the bias together (the columns extended by a one: ``a_t . a_t' + 1``)."""
    b, groups, t, _ = cols.shape
    a, d = cols.flatten(0, 1), dpos.flatten(0, 1)
    gram_a = torch.bmm(a, a.transpose(-1, -2), out=scratch("matmul.gram_a", (b * groups, t, t), cols))
    if bias:
        gram_a.add_(1)
    gram_d = torch.bmm(d, d.transpose(-1, -2), out=scratch("matmul.gram_d", (b * groups, t, t), cols))
    return row_dots(gram_a.view(b, -1), gram_d.view(b, -1))


def ghost_statistics(cols: Tensor, dpos: Tensor, weights: Sequence[Tensor],
                     biases: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Ghost norm, and ``g_i . W = sum_t d_t . (W a_t)`` through the columns (weights shaped ``(G, p, D)``); with
    ``biases`` (one per direction, ``(G * p,)``), the statistics of the weight and the bias together (``W a_t + b``)."""
    sq = ghost_norm(cols, dpos, biases is not None)
    if not weights:
        return sq, sq.new_zeros(cols.shape[0], 0)
    b, groups, t, fan_in = cols.shape
    if len(weights) == 1:  # the usual case (G_S alone): the layer's forward with W, then one dot per sample
        out = scratch("matmul.forward", (groups, b * t, weights[0].shape[1]), cols)
        if groups == 1:  # one matmul over all samples' rows (a broadcast matmul runs one per sample)
            torch.mm(cols.reshape(b * t, fan_in), weights[0][0].t(), out=out[0])
        else:
            torch.bmm(cols.transpose(0, 1).reshape(groups, b * t, fan_in), weights[0].transpose(-1, -2), out=out)
        if biases is not None:
            out.add_(biases[0].reshape(groups, 1, -1))
        return sq, row_dots(out.view(groups, b, t, out.shape[-1]).transpose(0, 1), dpos).unsqueeze(1)
    out = torch.einsum("bgtd,gkpd->bgtkp", cols, torch.stack(list(weights), 1))
    if biases is not None:
        out = out + torch.stack([v.reshape(groups, -1) for v in biases], 1).unsqueeze(1)
    return sq, torch.einsum("bgtkp,bgtp->bk", out, dpos)


def grouped_weights(weights: Sequence[Tensor], groups: int, fan_in: int) -> list[Tensor]:
    """Direction weights shaped ``(G, p, D)`` like the columns, made once per pool pass (a copy where a direction is
    not contiguous, as a channels-last one)."""
    return [derived(("matmul.grouped", groups, fan_in), (w,), lambda t: t.reshape(groups, -1, fan_in)) for w in weights]


def live_rows(cols: Tensor, dpos: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the positions whose output gradient is exactly zero (they add nothing to ``g_i``), when that at least
    halves the positions: each sample's nonzero rows first, padded with zero rows to the longest. A transformer
    classifying from its first token has one such row per sample in its last block's dense layers, and padded
    tokens have none anywhere."""
    t = cols.shape[2]
    # A cheap look first (not dropping is always exact): padding-style layouts with a live last or middle row keep
    # more than half the rows.
    if t < 4 or bool(dpos[:, :, -1].any()) or bool(dpos[:, :, t // 2].any()):
        return cols, dpos
    live = dpos.abs().amax(-1) != 0  # NaN and inf rows are live; one vectorised pass (6x `(dpos != 0).any(-1)`)
    keep = max(1, int(live.sum(-1).max()))  # one zero row where every row is zero (a zero-initialised head)
    if 2 * keep > t:
        return cols, dpos
    order = torch.argsort((~live).to(torch.uint8), dim=-1, stable=True)[..., :keep].unsqueeze(-1)
    return (cols.gather(2, order.expand(-1, -1, -1, cols.shape[-1])),
            dpos.gather(2, order.expand(-1, -1, -1, dpos.shape[-1])))


class LinearRule(LayerRule):
    """``nn.Linear`` on ``(B, ..., F)`` inputs; all middle dimensions are positions."""

    grouped_rows = True

    def _columns(self, a: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        b = a.shape[0]
        return a.reshape(b, 1, -1, a.shape[-1]), d.reshape(b, 1, -1, d.shape[-1])

    def per_sample_gradients(self, module: Any, a: Tensor, d: Tensor,
                             wanted: Collection[str]) -> dict[str, Tensor]:
        cols, dpos = self._columns(a, d)
        out = {}
        if "weight" in wanted:
            out["weight"] = (dpos.transpose(-1, -2) @ cols).reshape(a.shape[0], *module.weight.shape)
        if "bias" in wanted:
            out["bias"] = dpos.sum(2).reshape(a.shape[0], -1)
        return out

    def statistics(self, module: Any, a: Tensor, d: Tensor, wanted: Collection[str],
                   directions: Directions) -> tuple[Tensor, Tensor]:
        cols, dpos = live_rows(*self._columns(a, d))
        _, groups, t, fan_in = cols.shape
        if "weight" in wanted:
            ws = grouped_weights([v["weight"] for v in directions], groups, fan_in)
            if prefer_ghost(t, fan_in, dpos.shape[-1], len(ws)):  # the bias folded in: fewer passes than its own
                return ghost_statistics(cols, dpos, ws, [v["bias"] for v in directions] if "bias" in wanted else None)
            parts = [direct_statistics(cols, dpos, ws)]
        else:
            parts = []
        if "bias" in wanted:
            parts.append(bias_statistics(dpos.sum(2).reshape(a.shape[0], -1), directions))
        return add_statistics(parts)


class AddmmRule(LinearRule):
    """``torch.addmm(bias, x, weight)`` with ``weight: (in, out)`` (Hugging Face's ``Conv1D``, GPT-2)."""

    @staticmethod
    def _linear(module: Any, directions: Directions) -> tuple[Any, list[dict[str, Tensor]]]:
        spec = SimpleNamespace(weight=module.weight.T)
        return spec, [{k: (t.T if k == "weight" else t) for k, t in v.items()} for v in directions]

    def per_sample_gradients(self, module: Any, a: Tensor, d: Tensor,
                             wanted: Collection[str]) -> dict[str, Tensor]:
        spec, _ = self._linear(module, [])
        out = super().per_sample_gradients(spec, a, d, wanted)
        if "weight" in out:
            out["weight"] = out["weight"].transpose(-1, -2)
        return out

    def statistics(self, module: Any, a: Tensor, d: Tensor, wanted: Collection[str],
                   directions: Directions) -> tuple[Tensor, Tensor]:
        spec, local = self._linear(module, directions)
        return super().statistics(spec, a, d, wanted, local)
