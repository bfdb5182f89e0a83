"""``TextTransformer``: a small pre-norm transformer encoder that classifies token sequences."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_dynamical.errors import ConfigError, check_positive_int


class SelfAttention(nn.Module):
    """Multi-head self-attention over the unmasked tokens (plain ``Linear`` projections)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = self.dropout(scores.softmax(-1))
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: attention and an MLP, each added to the residual stream."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), mask))
        return x + self.dropout(self.mlp(self.norm2(x)))


class TextTransformer(nn.Module):
    """Token ids to class logits: embeddings plus learned positions, ``depth`` blocks, a masked mean, a head.

    Called as ``net(input_ids=..., attention_mask=...)`` (Hugging Face style keyword inputs), both
    ``(batch, T)`` with ``T <= max_length``; id 0 is padding. Built from its arguments alone (no download).

    Args:
        vocab_size: number of token ids (every id must be below it).
        num_classes: number of classes.
        max_length: longest sequence accepted.
        dim: width of the token representations.
        depth: number of transformer blocks.
        heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: MLP hidden width over ``dim``.
        dropout: dropout on embeddings, attention, residual branches and before the head.
    """

    def __init__(self, vocab_size: int, num_classes: int, max_length: int = 64, dim: int = 64, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("num_classes", num_classes), ("max_length", max_length),
                            ("dim", dim), ("heads", heads)):
            check_positive_int(name, value)
        if depth < 0 or not 0 <= dropout < 1:
            raise ConfigError(f"depth must be >= 0 and dropout in [0, 1), got {depth} and {dropout}")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos_embed = nn.Embedding(max_length, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(normalised token features (batch, T, dim), real-token mask (batch, T))``: what the sentence head pools
        and a token head (:class:`~lightning_dynamical.models.TokenTagger`) reads per token."""
        if input_ids.ndim != 2 or input_ids.shape[1] > self.max_length:
            raise ValueError(f"input_ids must be (batch, T) with T <= max_length={self.max_length}, "
                             f"got shape {tuple(input_ids.shape)}")
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(mask.shape)} must match input_ids {tuple(input_ids.shape)}")
        # Position ids with the batch dimension (not one broadcast row): per-sample gradients of the
        # position table then follow the embedding rule of the scoring engine.
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        x = self.dropout(self.embed(input_ids) + self.pos_embed(positions))
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), mask

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        x, mask = self.encode(input_ids, attention_mask)
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(self.dropout(pooled))
