"""Fast exact engine: one forward, one backward to the layer outputs, per-layer closed forms on the way.

The forward keeps each known layer's input and hooks its output. One backward of the summed pseudo-label
loss, restricted to the layer outputs (``inputs=`` gradient edges, so no weight gradient is ever formed),
hands each hook ``d = dL/d(output)`` (as it was before any in-place change downstream); the hook turns
``(input, d)`` into ``||g_i||^2`` and ``g_i . G_S`` with :mod:`~lightning_dynamical.scoring.layers` and
drops ``d``, so peak memory stays close to a training step's. In eval mode the summed loss is a sum of
independent per-sample losses, so these output gradients are exactly the per-sample ones.

Parameters the rules cannot cover exactly (unknown layers, tied parameters, a module called more than once,
a layer whose input was modified in place afterwards, ...) go to ``torch.func`` for just those parameters,
so every model scores exactly. Assumptions: in the caller's mode samples are independent (checked for
BatchNorm: a model normalising with batch statistics is scored by ``torch.func`` entirely), known layers
take batch-first inputs, and a known layer's parameters are used only through that layer's ``forward``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_dynamical.scoring.common import check_logits
from lightning_dynamical.scoring.engine import Engine, flat_dots
from lightning_dynamical.scoring.func import FuncEngine
from lightning_dynamical.scoring.layers import Directions, LayerRule, rule_for


@dataclass(eq=False)
class _Layer:
    """A module with a rule, the selected parameters it owns (``{attr: name}``) and what its forward saw."""

    module: nn.Module
    rule: LayerRule
    names: dict[str, str]
    inputs: list[Tensor] = field(default_factory=list)
    edges: list[GradientEdge] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    broken: bool = False
    active: bool = False

    def valid(self, batch: int) -> bool:
        """Called exactly once, with grad enabled, batch-first, and its input unchanged since."""
        return (not self.broken and len(self.inputs) == 1 and self.inputs[0].shape[:1] == (batch,)
                and self.inputs[0]._version == self.versions[0])


class _Batch:
    """One batch: the forward hook, the gradient hooks, and the running sums they add to."""

    def __init__(self, directions: Sequence[Mapping[str, Tensor]], chunk_size: int | None) -> None:
        self.directions = directions
        self.chunk_size = chunk_size
        self.sq: Tensor | None = None
        self.dots: Tensor | None = None

    def record(self, layer: _Layer, args: tuple, output: object) -> Tensor | None:
        """Forward hook: keep the input, and hook the output's gradient (before any in-place change)."""
        if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor) \
                or not torch.is_grad_enabled():
            layer.broken = True
            return None
        replaced = None
        if not output.requires_grad:  # nothing upstream needs grad: restart the graph here
            output = replaced = output.detach().requires_grad_().clone()
        layer.inputs.append(args[0])
        layer.edges.append(get_gradient_edge(output))
        layer.versions.append(args[0]._version)
        output.register_hook(lambda d: self.consume(layer, d))
        return replaced

    def consume(self, layer: _Layer, d: Tensor) -> None:
        """Gradient hook: add the layer's statistics, then let go of its input."""
        if not layer.active:
            return
        local = [{attr: v[name] for attr, name in layer.names.items()} for v in self.directions]
        with torch.no_grad():
            s, t = _layer_statistics(layer, layer.inputs[0].detach(), d, local, self.chunk_size)
        self.sq = s if self.sq is None else self.sq + s
        self.dots = t if self.dots is None else self.dots + t
        layer.inputs.clear()


def _layer_statistics(layer: _Layer, a: Tensor, d: Tensor, directions: Directions,
                      chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """The layer rule's statistics, ``chunk_size`` samples at a time (bounds the rule's temporaries)."""
    b = a.shape[0]
    step = chunk_size or b
    if b <= step:
        return layer.rule.statistics(layer.module, a, d, layer.names, directions)
    parts = [layer.rule.statistics(layer.module, a[i: i + step], d[i: i + step], layer.names, directions)
             for i in range(0, b, step)]
    return torch.cat([s for s, _ in parts]), torch.cat([t for _, t in parts])


def plan_layers(model: nn.Module, params: Mapping[str, nn.Parameter]) -> tuple[list[_Layer], list[str]]:
    """Split the selected parameters into those covered by a layer rule and the rest (by name)."""
    wanted = {id(p): n for n, p in params.items()}
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    layers, covered = [], set()
    for module in model.modules():
        rule = rule_for(module)
        own = {attr: wanted[id(p)] for attr, p in module._parameters.items()
               if attr in ("weight", "bias") and p is not None and id(p) in wanted and owners[id(p)] == 1}
        if rule is not None and own:
            layers.append(_Layer(module, rule, own))
            covered.update(own.values())
    return layers, [n for n in params if n not in covered]


def uses_batch_statistics(model: nn.Module) -> bool:
    """Whether some BatchNorm normalises with the batch's statistics (samples are then not independent)."""
    return any(isinstance(m, _BatchNorm) and (m.training or m.running_mean is None) for m in model.modules())


class FastEngine(Engine):
    """Exact ``||g_i||^2`` and ``g_i . v`` at about the cost of a training step; see the module docstring.

    Args:
        chunk_size: samples per per-layer computation (bounds temporaries such as unfolded inputs), and
            per ``vmap`` call of the ``torch.func`` fallback.
    """

    name = "fast"

    def __init__(self, chunk_size: int | None = 32) -> None:
        self.func = FuncEngine(chunk_size)
        self.chunk_size = chunk_size

    def batch_statistics(
        self,
        model: nn.Module,
        x: Tensor,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
    ) -> tuple[Tensor, Tensor, Tensor]:
        if uses_batch_statistics(model):
            return self.func.batch_statistics(model, x, params, directions)
        b = x.shape[0]
        layers, fallback = plan_layers(model, params)
        batch = _Batch(directions, self.chunk_size)
        handles = [layer.module.register_forward_hook(
            lambda _m, args, out, layer=layer: batch.record(layer, args, out)) for layer in layers]
        try:
            with torch.set_grad_enabled(bool(layers)):
                logits = check_logits(model(x), b)
        finally:
            for h in handles:
                h.remove()
        y = logits.detach().argmax(1)
        for layer in layers:
            layer.active = layer.valid(b)
        fallback += [n for layer in layers if not layer.active for n in layer.names.values()]
        edges = [layer.edges[0] for layer in layers if layer.active]
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        if edges and loss.requires_grad:
            torch.autograd.backward(loss, inputs=edges)
        for layer in layers:
            layer.inputs.clear()
        del logits, loss, layers, edges  # free the graph and saved activations before the fallback
        dtype = next(iter(params.values())).dtype
        sq = batch.sq if batch.sq is not None else x.new_zeros(b, dtype=dtype)
        dots = batch.dots if batch.dots is not None else x.new_zeros(b, len(directions), dtype=dtype)
        if fallback:
            grads = self.func.per_sample_gradients(model, x, y, {n: params[n] for n in fallback})
            sq = sq + sum(g.reshape(b, -1).pow(2).sum(1) for g in grads.values())
            dots = dots + flat_dots(grads, directions, b)
        return sq, dots, y
