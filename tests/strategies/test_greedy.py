"""Greedy batch correction: chunked selection against an explicit brute-force greedy maximisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import DynamicAL
from lightning_dynamical.scoring import evaluation
from lightning_dynamical.strategies.dynamical import chunk_sizes
from tests.helpers.brute_force import labeled_grad, per_sample_grads
from tests.helpers.models import TinyCNN, trained_like

N_POOL, B = 10, 4

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    model = trained_like(TinyCNN(), torch.randn(16, 1, 6, 6)).double()
    pool_x = torch.randn(N_POOL, 1, 6, 6, dtype=torch.float64)
    lab_x = torch.randn(6, 1, 6, 6, dtype=torch.float64)
    lab_y = torch.randint(0, 4, (6,))
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(N_POOL, dtype=torch.long)), batch_size=3)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=4)
    with evaluation(model):
        g, _ = per_sample_grads(model, pool_x)
        g_s = labeled_grad(model, lab_x, lab_y)
    return model, pool, labeled, g.detach(), g_s.detach()


def _brute_force_greedy(g: torch.Tensor, g_s: torch.Tensor, sizes: list[int], gamma: float) -> list[int]:
    """Chunk by chunk, the samples of largest ``||g_u||^2 + gamma g_u . (G_S + G_Q)``, then update ``G_Q``."""
    total, chosen = g_s.clone(), []
    for size in sizes:
        rest = [u for u in range(g.shape[0]) if u not in chosen]
        dots = g[rest] @ total
        gains = dots if math.isinf(gamma) else g[rest].pow(2).sum(1) + gamma * dots
        picked = [rest[i] for i in torch.sort(gains, descending=True, stable=True).indices[:size].tolist()]
        chosen += picked
        total = total + g[picked].sum(0)
    return chosen


def test_chunk_sizes():
    assert chunk_sizes(10, 3) == [4, 3, 3]
    assert chunk_sizes(2, 4) == [1, 1]
    assert chunk_sizes(5, 1) == [5]
    assert chunk_sizes(0, 3) == []


@pytest.mark.parametrize("engine", ["fast", "func"])
def test_one_by_one_greedy_maximises_the_summed_gradient_norm(engine):
    model, pool, labeled, g, g_s = _problem()
    strategy = DynamicAL(gamma=2.0, engine=engine, greedy_chunks=B)
    chosen = strategy.select(model, pool, labeled, B).positions.tolist()
    total, expected = g_s.clone(), []
    for _ in range(B):  # explicit: the u maximising ||G_S + G_Q + g_u||^2
        rest = [u for u in range(N_POOL) if u not in expected]
        best = max(rest, key=lambda u: float((total + g[u]).pow(2).sum()))
        expected.append(best)
        total = total + g[best]
    assert chosen == expected
    gains = [float((g_s + g[expected[:i]].sum(0) + g[u]).pow(2).sum() - (g_s + g[expected[:i]].sum(0)).pow(2).sum())
             for i, u in enumerate(expected)]
    torch.testing.assert_close(strategy.last_gains, torch.tensor(gains, dtype=torch.float64))


@pytest.mark.parametrize("gamma", [1.0, math.inf])
@pytest.mark.parametrize("chunks", [2, 3])
def test_chunked_greedy_matches_brute_force(chunks, gamma):
    model, pool, labeled, g, g_s = _problem(seed=1)
    chosen = DynamicAL(gamma=gamma, greedy_chunks=chunks).select(model, pool, labeled, B + 1).positions.tolist()
    assert chosen == _brute_force_greedy(g, g_s, chunk_sizes(B + 1, chunks), gamma)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_one_chunk_and_gamma_zero_are_top_b(gamma):
    model, pool, labeled, *_ = _problem(seed=2)
    plain = DynamicAL(gamma=gamma)
    top = plain.select(model, pool, labeled, B)
    chunks = 1 if gamma else 3
    assert torch.equal(DynamicAL(gamma=gamma, greedy_chunks=chunks).select(model, pool, labeled, B).positions,
                       top.positions)
    assert set(top.positions.tolist()) == set(top.pool_scores.argsort(descending=True)[:B].tolist())
    torch.testing.assert_close(top.scores, top.pool_scores[top.positions])


def test_greedy_is_joint_and_keeps_the_model_untouched():
    model, pool, labeled, *_ = _problem(seed=3)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strategy = DynamicAL(greedy_chunks=2)
    assert strategy.joint and not DynamicAL().joint
    chosen = strategy.select(model, pool, labeled, N_POOL + 5)
    assert sorted(chosen.positions.tolist()) == list(range(N_POOL))
    assert model.training and model.bn.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert chosen.pool_scores.shape == (N_POOL,) and chosen.pseudo_labels.shape == (N_POOL,)
    assert torch.equal(chosen.pseudo_labels, strategy.last_statistics.pseudo_labels[chosen.positions])
    assert "greedy_chunks=2" in repr(strategy)
    with pytest.raises(ValueError, match="greedy_chunks"):
        DynamicAL(greedy_chunks=0)


def _brute_force_authors_deinfluence(g: torch.Tensor, g_s: torch.Tensor, sizes: list[int], gamma: float) -> list[int]:
    """The authors' loop (``ntk_active_memo_efficient.py``, defaults ``norm_inf=0, inf_type='full'``): a fixed
    ``self_term = ||g_u||^2 + gamma g_u . G_S``; each chunk takes the largest ``self_term - g_u . Q`` among the
    unchosen samples, then ``Q`` grows by the chunk's mean-loss gradient (sum of its ``g_u`` over its size)."""
    self_term = g.pow(2).sum(1) + gamma * (g @ g_s)
    queried_grads, chosen = torch.zeros_like(g_s), []
    for size in sizes:
        updated = self_term - g @ queried_grads
        updated[chosen] = -math.inf
        picked = updated.argsort(descending=True)[:size].tolist()
        chosen += picked
        queried_grads = queried_grads + g[picked].mean(0)
    return chosen


@pytest.mark.parametrize("engine", ["fast", "func"])
@pytest.mark.parametrize("chunks, gamma", [(2, 2.0), (3, 2.0), (4, 0.0)])
def test_deinfluence_matches_the_authors_loop(engine, chunks, gamma):
    """With BatchNorm and dropout in the model (eval mode), float64, on a pool with distinct scores."""
    for seed in (4, 5):
        model, pool, labeled, g, g_s = _problem(seed=seed)
        strategy = DynamicAL(gamma=gamma, engine=engine, deinfluence=chunks)
        chosen = strategy.select(model, pool, labeled, B + 2).positions.tolist()
        expected = _brute_force_authors_deinfluence(g, g_s, chunk_sizes(B + 2, chunks), gamma)
        assert chosen == expected
        assert strategy.joint and "deinfluence=" in repr(strategy)


def test_deinfluence_subtracts_where_greedy_adds():
    """On one pool the two chunked selections differ from each other, and from top-b, in the direction of their
    sign: the authors' step moves away from the chosen chunk's gradient, the exact marginal gain towards it."""
    differs = 0
    for seed in range(6):
        model, pool, labeled, g, g_s = _problem(seed=seed)
        authors = DynamicAL(deinfluence=B).select(model, pool, labeled, B).positions.tolist()
        greedy = DynamicAL(greedy_chunks=B).select(model, pool, labeled, B).positions.tolist()
        assert authors == _brute_force_authors_deinfluence(g, g_s, [1] * B, 2.0)
        assert greedy == _brute_force_greedy(g, g_s, [1] * B, 2.0)
        differs += authors != greedy
    assert differs >= 1


def test_deinfluence_is_refused_with_greedy_chunks_or_bad_counts():
    with pytest.raises(ValueError, match="two different chunked selections"):
        DynamicAL(greedy_chunks=2, deinfluence=5)
    with pytest.raises(ValueError, match=r"^deinfluence must be null or a positive int \(>= 1\), got 0$"):
        DynamicAL(deinfluence=0)
