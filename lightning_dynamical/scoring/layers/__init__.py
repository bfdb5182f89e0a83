"""Per-layer closed forms: per-sample gradient statistics from a layer's input and output gradient.

For a layer applied once to a batch, with input ``a`` and gradient ``d`` of a sum of per-sample losses
w.r.t. its output, the per-sample parameter gradients depend only on ``(a_i, d_i)``. Each rule turns them
into ``||g_i||^2`` and ``g_i . v_k`` without the autograd weight-gradient pass and, where cheaper, without
forming ``g_i`` (ghost norm). This package is the only place with per-layer gradient math: the fast
engine, the last-layer closed form and gradient embeddings all use these rules.
"""

from torch import nn

from lightning_dynamical.scoring.layers.base import Directions, LayerRule, gradient_statistics
from lightning_dynamical.scoring.layers.conv import ConvRule
from lightning_dynamical.scoring.layers.embedding import EmbeddingRule
from lightning_dynamical.scoring.layers.matmul import LinearRule
from lightning_dynamical.scoring.layers.norm import BatchNormRule, GroupNormRule, LayerNormRule

__all__ = ["RULES", "Directions", "LayerRule", "gradient_statistics", "rule_for"]

RULES: dict[type[nn.Module], LayerRule] = {
    nn.Linear: LinearRule(),
    nn.Conv1d: ConvRule(),
    nn.Conv2d: ConvRule(),
    nn.BatchNorm1d: BatchNormRule(),
    nn.BatchNorm2d: BatchNormRule(),
    nn.BatchNorm3d: BatchNormRule(),
    nn.LayerNorm: LayerNormRule(),
    nn.GroupNorm: GroupNormRule(),
    nn.Embedding: EmbeddingRule(),
}
"""Rules by exact module type: a subclass may override ``forward``, so it falls back instead."""


def rule_for(module: nn.Module) -> LayerRule | None:
    """The rule covering this module exactly, or ``None`` (unknown type or unsupported configuration)."""
    rule = RULES.get(type(module))
    return rule if rule is not None and rule.supports(module) else None
