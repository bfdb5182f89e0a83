"""Users extend the fast path by registering a function the layer rules do not know: a head written as
``torch.einsum("bi,oi->bo", h, W)`` goes from the exact vmap path to the closed form, and stays exact."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import DynamicAL
from lightning_dynamical.scoring.layers import OPS, RULES, OpCall, register_op
from tests.helpers.brute_force import dynamical_scores

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]


class EinsumHead(nn.Module):
    """Linear-BatchNorm-ReLU-dropout, then a bias-free head as an einsum."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Parameter(torch.randn(3, 8) / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bi,oi->bo", self.body(x), self.head)


def einsum_linear(args: tuple, kwargs: Mapping[str, Any]) -> OpCall | None:
    """``einsum("bi,oi->bo", x, W)`` is ``F.linear(x, W)``; any other equation is not covered."""
    if len(args) != 3 or kwargs or str(args[0]).replace(" ", "") != "bi,oi->bo":
        return None
    x, w = args[1], args[2]
    return OpCall("linear", RULES["linear"], SimpleNamespace(weight=w), x, {"weight": w})


@pytest.fixture
def registry():
    saved = dict(OPS)
    yield
    OPS.clear()
    OPS.update(saved)


def _problem():
    torch.manual_seed(0)
    model = EinsumHead().double()
    model.train()
    with torch.no_grad():  # running statistics that are not the identity
        model.body(torch.randn(64, 5, dtype=torch.float64) * 2 + 1)
    pool_x, lab_x = torch.randn(10, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    lab_y = torch.tensor([0, 2, 1, 2])
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(10, dtype=torch.long)), batch_size=4)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=3)
    return model, pool, labeled, pool_x, lab_x, lab_y


def _paths(model: nn.Module, pool: DataLoader) -> dict[str, str]:
    return {p.name: p.path for p in DynamicAL().explain(model, next(iter(pool)))}


@pytest.mark.parametrize("as_decorator", [False, True])
def test_a_registered_function_takes_the_closed_form_and_scores_exactly(registry, as_decorator):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem()
    assert _paths(model, pool)["head"] == "vmap"
    if as_decorator:
        register_op(torch.einsum)(einsum_linear)
    else:
        assert register_op(torch.einsum, einsum_linear) is einsum_linear
    paths = _paths(model, pool)
    assert paths["head"] == "fast (linear)" and paths["body.0.weight"] == "fast (linear)"
    for gamma in (0.0, 2.0, math.inf):
        ref = dynamical_scores(model, pool_x, lab_x, lab_y, gamma)
        scores = DynamicAL(gamma=gamma).score(model, pool, labeled)
        assert float((scores - ref).abs().max() / ref.abs().max()) <= 1e-8, gamma
    assert model.training


def test_a_use_the_binder_does_not_cover_stays_on_the_exact_path(registry):
    register_op(torch.einsum, einsum_linear)
    model, pool, labeled, pool_x, lab_x, lab_y = _problem()
    model.forward = lambda x: torch.einsum("oi,bi->bo", model.head, model.body(x))  # type: ignore[method-assign]
    assert _paths(model, pool)["head"] == "vmap"
    ref = dynamical_scores(model, pool_x, lab_x, lab_y, 2.0)
    scores = DynamicAL().score(model, pool, labeled)
    assert float((scores - ref).abs().max() / ref.abs().max()) <= 1e-8
