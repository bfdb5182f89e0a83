"""``nn.Embedding``: per-sample gradients are sums of output gradients over repeated indices."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_dynamical.scoring.layers.base import Directions, LayerRule, row_dots


class EmbeddingRule(LayerRule):
    """Without ``max_norm``/``scale_grad_by_freq``; the ``padding_idx`` row gets no gradient.

    ``||g_i||^2`` sums, over the distinct indices of sample ``i``, the squared norm of the summed output
    gradients (linear in the number of lookups); ``g_i . V = sum_t d_t . V[idx_t]`` is a lookup in ``V``.
    """

    def supports(self, module: Any) -> bool:
        return module.max_norm is None and not module.scale_grad_by_freq

    def _flat(self, module: Any, idx: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(idx (B, T), d (B, T, E), row keys (B*T,))`` with padding lookups masked out."""
        b = idx.shape[0]
        idx, d = idx.reshape(b, -1), d.reshape(b, -1, d.shape[-1])
        if module.padding_idx is not None:
            d = d.masked_fill((idx == module.padding_idx).unsqueeze(-1), 0)
        offsets = module.num_embeddings * torch.arange(b, device=idx.device).unsqueeze(1)
        return idx, d, (idx + offsets).reshape(-1)

    def per_sample_gradients(self, module: Any, a: Tensor, d: Tensor,
                             wanted: Collection[str]) -> dict[str, Tensor]:
        if "weight" not in wanted:
            return {}
        idx, d, keys = self._flat(module, a, d)
        b, e = idx.shape[0], d.shape[-1]
        g = d.new_zeros(b * module.num_embeddings, e).index_add_(0, keys, d.reshape(-1, e))
        return {"weight": g.reshape(b, module.num_embeddings, e)}

    def statistics(self, module: Any, a: Tensor, d: Tensor, wanted: Collection[str],
                   directions: Directions) -> tuple[Tensor, Tensor]:
        b, k = a.shape[0], len(directions)
        if "weight" not in wanted:
            return d.new_zeros(b), d.new_zeros(b, k)
        idx, d, keys = self._flat(module, a, d)
        n, e = module.num_embeddings, d.shape[-1]
        unique, inverse = torch.unique(keys, return_inverse=True)
        rows = d.new_zeros(unique.numel(), e).index_add_(0, inverse, d.reshape(-1, e))
        sq = d.new_zeros(b).index_add_(0, unique // n, rows.square().sum(1))
        if not directions:
            return sq, d.new_zeros(b, 0)
        if k == 1:  # the usual case (G_S alone): look up in the direction itself, no copy of the table
            looked_up = F.embedding(idx, directions[0]["weight"])
            return sq, row_dots(looked_up, d).unsqueeze(1)
        table = torch.stack([v["weight"] for v in directions], 1).reshape(n, -1)
        looked_up = F.embedding(idx, table).reshape(b, idx.shape[1], k, e)
        return sq, torch.einsum("btke,bte->bk", looked_up, d)
