"""A parameter reaching the batch through view ops gets its per-sample gradient mapped back through their adjoint:
a reshape back for order-keeping chains, the views' vector-Jacobian product otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_dynamical.scoring.layers.broadcast import View


def _reference(view: View, g: Tensor) -> Tensor:
    """Each sample's gradient pulled back through the views by autograd."""
    out = []
    for gi in g:
        p = view.param.detach().requires_grad_()
        v = p
        for func, rest, kwargs in view.steps:
            v = func(v, *rest, **kwargs)
        (grad,) = torch.autograd.grad(v, p, gi)
        out.append(grad)
    return torch.stack(out)


@pytest.mark.parametrize("steps", [
    [(Tensor.reshape, ((1, -1, 1, 1),), {})],
    [(Tensor.view, (12,), {}), (Tensor.unsqueeze, (0,), {}), (torch.unsqueeze, (-1,), {})],
    [(Tensor.flatten, (), {}), (Tensor.reshape, ((4, 3),), {})],
    [(Tensor.transpose, (0, 1), {})],
    [(Tensor.permute, ((1, 0),), {}), (Tensor.reshape, ((1, 12),), {})],
])
def test_views_map_gradients_back_to_the_parameter(steps: list) -> None:
    torch.manual_seed(0)
    param = torch.randn(3, 4, dtype=torch.float64)
    view = View(param, steps)
    value = param
    for func, rest, kwargs in steps:
        value = func(value, *rest, **kwargs)
    g = torch.randn(5, *value.shape, dtype=torch.float64)
    got = view.to_parameter(g)
    assert got.shape == (5, 3, 4)
    torch.testing.assert_close(got, _reference(view, g), rtol=0, atol=0)
