"""``TokenTagger``: a small pre-norm transformer encoder that gives every token its own tag logits (NER)."""

from __future__ import annotations

from torch import Tensor

from lightning_dynamical.errors import check_positive_int
from lightning_dynamical.models.text_transformer import TextTransformer


class TokenTagger(TextTransformer):
    """Token ids to per-token tag logits ``(batch, T, num_tags)``: embeddings plus learned positions, ``depth``
    blocks attending only to real tokens, a final norm and a per-token ``nn.Linear`` head.

    It is :class:`~lightning_dynamical.models.text_transformer.TextTransformer`'s encoder (plain ``Linear``
    projections, which the per-sample scoring engines handle) with the head applied per token instead of to the
    pooled sentence, and padding keys are masked out of attention, so
    padding never changes a real token's logits. Called as ``net(input_ids=..., attention_mask=...)``, both
    ``(batch, T)`` with ``T <= max_length``; id 0 is padding. Built from its arguments alone (no download).

    Args:
        vocab_size: number of token ids (every id must be below it).
        num_tags: number of tags (7 for WikiANN's IOB2 tags).
        max_length: longest sequence accepted.
        dim: width of the token representations.
        depth: number of transformer blocks (0: embeddings straight to the head).
        heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: MLP hidden width over ``dim``.
        dropout: dropout on embeddings, attention, residual branches and before the head.
    """

    def __init__(self, vocab_size: int, num_tags: int, max_length: int = 32, dim: int = 64, depth: int = 1,
                 heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1) -> None:
        check_positive_int("num_tags", num_tags)
        super().__init__(vocab_size, num_tags, max_length=max_length, dim=dim, depth=depth, heads=heads,
                         mlp_ratio=mlp_ratio, dropout=dropout)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        x, _ = self.encode(input_ids, attention_mask)
        return self.head(self.dropout(x))
