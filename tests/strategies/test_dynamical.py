"""DynamicAL against the brute-force reference (one autograd.grad per sample)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import DynamicAL
from tests.helpers.brute_force import dynamical_scores
from tests.helpers.models import TinyCNN, trained_like


def _problem(dtype: torch.dtype, seed: int = 0):
    torch.manual_seed(seed)
    model = trained_like(TinyCNN(), torch.randn(16, 1, 6, 6)).to(dtype)
    pool_x = torch.randn(21, 1, 6, 6, dtype=dtype)
    lab_x = torch.randn(9, 1, 6, 6, dtype=dtype)
    lab_y = torch.randint(0, 4, (9,))
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(21, dtype=torch.long)), batch_size=8)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=4)
    return model, pool, labeled, pool_x, lab_x, lab_y


@pytest.mark.parametrize("gamma", [0.0, 2.0, math.inf])
@pytest.mark.parametrize("params", [None, ["fc.weight", "conv.weight"]])
@pytest.mark.parametrize("engine", ["func", "auto"])
def test_matches_brute_force_float64(gamma, params, engine):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(torch.float64)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = DynamicAL(gamma=gamma, params=params, engine=engine, chunk_size=5).score(model, pool, labeled)
    ref = dynamical_scores(model, pool_x, lab_x, lab_y, gamma, params)
    assert scores.shape == (21,)
    assert (scores - ref).abs().max() <= 1e-8 * ref.abs().max()
    assert model.training and model.bn.training and model.drop.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("gamma", [0.0, 2.0, math.inf])
def test_matches_brute_force_float32(gamma):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(torch.float32, seed=1)
    scores = DynamicAL(gamma=gamma).score(model, pool, labeled)
    ref = dynamical_scores(model.double(), pool_x.double(), lab_x.double(), lab_y, gamma)
    assert (scores.double() - ref).abs().max() <= 1e-3 * ref.abs().max()


def test_gamma_inf_is_dot_term_and_gamma_combines():
    model, pool, labeled, *_ = _problem(torch.float64, seed=2)
    s0 = DynamicAL(gamma=0).score(model, pool, labeled)
    dot = DynamicAL(gamma=math.inf).score(model, pool, labeled)
    s2 = DynamicAL(gamma=2).score(model, pool, labeled)
    torch.testing.assert_close(s2, s0 + 2 * dot, rtol=1e-10, atol=1e-10)


def test_select_is_top_b_and_rejects_bad_args():
    model, pool, labeled, *_ = _problem(torch.float64, seed=3)
    strategy = DynamicAL()
    chosen = strategy.select(model, pool, labeled, 5)
    scores = chosen.pool_scores
    assert set(chosen.positions.tolist()) == set(scores.argsort(descending=True)[:5].tolist())
    with pytest.raises(ValueError, match="gamma"):
        DynamicAL(gamma=-1)
    with pytest.raises(ValueError, match="Unknown parameter"):
        DynamicAL(params=["nope"]).score(model, pool, labeled)
