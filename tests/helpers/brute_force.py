"""Brute-force references: one ``torch.autograd.grad`` call per sample, explicit G_S."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_dynamical.strategies import DynamicAL, Entropy, LeastConfidence, Margin, Strategy


def layer_statistics(layer: nn.Module, a: Tensor, d: Tensor, v: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``||g_i||^2`` and ``g_i . v`` over the parameters named in ``v`` of one layer with input ``a`` and output
    gradient ``d``: one autograd call per sample."""
    params = [getattr(layer, name) for name in v]
    sq, dots = [], []
    for i in range(a.shape[0]):
        grads = torch.autograd.grad((layer(a[i: i + 1]) * d[i: i + 1]).sum(), params)
        sq.append(sum(g.pow(2).sum() for g in grads))
        dots.append(sum((g * t).sum() for g, t in zip(grads, v.values())))
    return torch.stack(sq), torch.stack(dots)


def per_sample_grads(model: nn.Module, x: Tensor, names: list[str] | None = None) -> tuple[Tensor, Tensor]:
    """``(grads (N, P), pseudo_labels (N,))``: flattened gradient of CE(f(x_i), argmax f(x_i)) per sample."""
    params = dict(model.named_parameters())
    names = names or [n for n, p in params.items() if p.requires_grad]
    rows, labels = [], []
    for i in range(x.shape[0]):
        logits = model(x[i : i + 1])
        y = logits.argmax(1).detach()
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(params[n])).reshape(-1)
                               for n, g in zip(names, grads)]))
        labels.append(y[0])
    return torch.stack(rows), torch.stack(labels)


def labeled_grad(model: nn.Module, x: Tensor, y: Tensor, names: list[str] | None = None) -> Tensor:
    """Flattened G_S = sum_i grad CE(f(x_i), y_i), accumulated one sample at a time."""
    params = dict(model.named_parameters())
    names = names or [n for n, p in params.items() if p.requires_grad]
    total = None
    for i in range(x.shape[0]):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(params[n])).reshape(-1)
                          for n, g in zip(names, grads)])
        total = flat if total is None else total + flat
    return total


def dynamical_scores(model: nn.Module, pool_x: Tensor, lab_x: Tensor, lab_y: Tensor, gamma: float,
                     names: list[str] | None = None) -> Tensor:
    """Reference dynamicAL scores with the model in eval mode (mode restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        g, _ = per_sample_grads(model, pool_x, names)
        sq = g.pow(2).sum(1)
        if gamma == 0:
            return sq.detach()
        dots = g @ labeled_grad(model, lab_x, lab_y, names)
        return (dots if math.isinf(gamma) else sq + gamma * dots).detach()
    finally:
        model.train(was_training)


def _one(inputs, i):
    """Sample ``i`` of a tensor, a tuple or a dict of batched tensors, as a batch of one (test-local code)."""
    if isinstance(inputs, dict):
        return {k: v[i : i + 1] for k, v in inputs.items()}
    if isinstance(inputs, tuple):
        return tuple(v[i : i + 1] for v in inputs)
    return inputs[i : i + 1]


def _logits(model: nn.Module, inputs) -> Tensor:
    args = inputs if isinstance(inputs, tuple) else () if isinstance(inputs, dict) else (inputs,)
    out = model(*args, **(inputs if isinstance(inputs, dict) else {}))
    if isinstance(out, dict):
        return out["logits"]
    if isinstance(out, tuple):
        return out[0]
    return out.logits if hasattr(out, "logits") else out


def any_per_sample_grads(model: nn.Module, inputs, targets: Tensor | None = None) -> Tensor:
    """``(N, P)`` flattened gradients of CE(f(x_i), y_i) per sample, for tensor, tuple (``model(*inputs)``) or dict
    inputs and any output kind; ``y_i`` is ``argmax f(x_i)`` unless ``targets`` are given."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs[0] if isinstance(inputs, tuple) \
        else inputs
    n = first.shape[0]
    rows = []
    for i in range(n):
        logits = _logits(model, _one(inputs, i))
        y = logits.argmax(1).detach() if targets is None else targets[i : i + 1]
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        grads = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(params[k])).reshape(-1)
                               for k, g in zip(names, grads)]))
    return torch.stack(rows)


def assert_close_scores(scores: Tensor, ref: Tensor, rtol: float = 1e-9) -> None:
    """Scores within ``rtol`` of the reference's largest magnitude (a relative test that zero scores cannot fail)."""
    assert scores.shape == ref.shape
    err = (scores - ref).abs().max()
    assert err <= rtol * ref.abs().max(), f"max error {err:.3e} vs max |score| {ref.abs().max():.3e}"


def scores_of(g: Tensor, g_s: Tensor, gamma: float) -> Tensor:
    """dynamicAL's ``||g||^2 + gamma g . G_S`` from per-sample gradient rows ``g`` (gamma inf: the dot term alone)."""
    sq, dots = g.pow(2).sum(1), g @ g_s
    return sq if gamma == 0 else dots if math.isinf(gamma) else sq + gamma * dots


def assert_dynamical_exact(model: nn.Module, pool: object, labeled: object, g: Tensor, g_s: Tensor,
                           rtol: float = 1e-8, engine: str = "auto") -> None:
    """``DynamicAL(gamma, engine, chunk_size=3).score`` for gamma 0, 2 and inf within ``rtol`` of the largest
    reference score from per-sample gradient rows ``g`` and ``G_S``."""
    for gamma in (0.0, 2.0, math.inf):
        ref = scores_of(g, g_s, gamma)
        scores = DynamicAL(gamma=gamma, engine=engine, chunk_size=3).score(model, pool, labeled)
        err = float((scores - ref).abs().max() / ref.abs().max())
        assert err <= rtol, (gamma, err)


def entropy_of(p: list[float]) -> float:
    """Shannon entropy of one distribution, written out."""
    return -sum(v * math.log(v) for v in p if v > 0)


UNCERTAINTY_FORMULAS: list[tuple[Callable[[], Strategy], Callable[[list[float]], float]]] = [
    (Entropy, entropy_of),
    (LeastConfidence, lambda p: 1 - max(p)),
    (Margin, lambda p: -(sorted(p)[-1] - sorted(p)[-2])),
]
"""Each uncertainty strategy with its formula for one position's probabilities, written out."""
