"""Embedding statistics (repeated indices, a padding row) against per-sample ``torch.autograd.grad``, float64, with
no, one and several directions (one direction is looked up in place, several through a stacked table)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_dynamical.scoring.layers.embedding import EmbeddingRule

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("directions", [0, 1, 3])
def test_embedding_statistics(directions: int) -> None:
    torch.manual_seed(0)
    layer = nn.Embedding(11, 4, padding_idx=0).double()
    idx = torch.randint(0, 11, (5, 9))
    idx[:, :3] = idx[:, 3:6]  # repeated lookups within each sample
    idx[0, -2:] = 0  # padding lookups get no gradient
    d = torch.randn(5, 9, 4, dtype=torch.float64)
    vs = [{"weight": torch.randn_like(layer.weight)} for _ in range(directions)]
    sq, dots = EmbeddingRule().statistics(layer, idx, d, {"weight"}, vs)
    assert dots.shape == (5, directions)
    for i in range(5):
        (g,) = torch.autograd.grad((layer(idx[i: i + 1]) * d[i: i + 1]).sum(), [layer.weight])
        torch.testing.assert_close(sq[i], g.pow(2).sum(), rtol=1e-12, atol=0)
        for k, v in enumerate(vs):
            torch.testing.assert_close(dots[i, k], (g * v["weight"]).sum(), rtol=1e-12, atol=1e-14)
