"""Per-layer closed forms: per-sample gradient statistics from a layer's input and output gradient.

For a layer applied once to a batch, with input ``a`` and gradient ``d`` of a sum of per-sample losses
w.r.t. its output, the per-sample parameter gradients depend only on ``(a_i, d_i)``. Each rule turns them
into ``||g_i||^2`` and ``g_i . v_k`` without the autograd weight-gradient pass and, where cheaper, without
forming ``g_i`` (ghost norm). This package is the only place with per-layer gradient math: the fast
engine, the last-layer closed form and gradient embeddings all use these rules.
"""

from lightning_dynamical.scoring.layers.base import Directions, LayerRule, gradient_statistics
from lightning_dynamical.scoring.layers.ops import OPS, RULES, OpCall, bind, register_op

__all__ = ["OPS", "RULES", "Directions", "LayerRule", "OpCall", "bind", "gradient_statistics", "register_op"]
