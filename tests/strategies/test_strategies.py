"""Query strategies on cases with known answers: uncertainty, BALD, BADGE, Coreset and ALBL."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical.strategies.albl import ALBL, Exp4P
from lightning_dynamical.strategies.badge import BADGE, gradient_embedding_factors, kmeans_pp
from lightning_dynamical.strategies.bald import BALD, mutual_information
from lightning_dynamical.strategies.base import NonFiniteScoresError, Strategy
from lightning_dynamical.strategies.coreset import Coreset
from lightning_dynamical.strategies.random import Random
from lightning_dynamical.strategies.uncertainty import Entropy, LeastConfidence, Margin
from tests.helpers.brute_force import per_sample_grads
from tests.helpers.models import TinyCNN, trained_like


def loader(x: Tensor, y: Tensor | None = None, batch_size: int = 4, shuffle: bool = False, seed: int = 0
           ) -> DataLoader:
    data = TensorDataset(x) if y is None else TensorDataset(x, y)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen)


def identity_head(n: int) -> nn.Linear:
    """A head whose logits are its input (and whose features are the input too)."""
    head = nn.Linear(n, n)
    with torch.no_grad():
        head.weight.copy_(torch.eye(n))
        head.bias.zero_()
    return head


def mixed_model(seed: int = 0) -> nn.Module:
    """A small CNN with BatchNorm (non-trivial running statistics) and Dropout, in training mode."""
    torch.manual_seed(seed)
    return trained_like(TinyCNN(num_classes=3), torch.randn(16, 1, 6, 6))


# Logits chosen so that entropy, least confidence and margin rank them in known orders.
LOGITS = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [2.0, 2.0, -9.0], [6.0, 1.0, 0.0], [1.0, 0.5, 0.0]])


def softmax_rows(rows: Tensor) -> list[list[float]]:
    out = []
    for row in rows.tolist():
        z = [math.exp(v) for v in row]
        out.append([v / sum(z) for v in z])
    return out


@pytest.mark.parametrize(("strategy", "formula"), [
    (Entropy(), lambda p: -sum(v * math.log(v) for v in p)),
    (LeastConfidence(), lambda p: 1 - max(p)),
    (Margin(), lambda p: -(sorted(p)[-1] - sorted(p)[-2])),
])
def test_uncertainty_scores_match_formulas_and_rank(strategy: Strategy, formula) -> None:
    expected = torch.tensor([formula(p) for p in softmax_rows(LOGITS)], dtype=torch.float64)
    pool = loader(LOGITS, batch_size=2)
    scores = strategy.score(identity_head(3), pool, [])
    torch.testing.assert_close(scores, expected)
    ranked = torch.argsort(expected, descending=True)[:3].tolist()
    assert strategy.select(identity_head(3), pool, [], 3).positions.tolist() == ranked


def test_uncertainty_known_extremes() -> None:
    pool = loader(LOGITS)
    assert Entropy().select(identity_head(3), pool, [], 1).positions.item() == 0  # uniform: ln 3
    assert Margin().select(identity_head(3), pool, [], 2).positions.tolist() == [0, 2]  # top two classes tied
    assert Margin().score(identity_head(3), pool, [])[[0, 2]].tolist() == [0.0, 0.0]
    assert LeastConfidence().select(identity_head(3), pool, [], 5).positions.tolist()[-1] == 3  # the most confident


def test_mutual_information_known_values() -> None:
    disagree = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    agree = torch.tensor([[[0.3, 0.7], [0.3, 0.7]]], dtype=torch.float64)
    torch.testing.assert_close(mutual_information(disagree), torch.tensor([math.log(2)], dtype=torch.float64))
    torch.testing.assert_close(mutual_information(agree), torch.zeros(1, dtype=torch.float64))


def dropout_model(p: float) -> nn.Module:
    """Dropout on the input, then identity logits: a sample with input 0 has no disagreement at all."""
    return nn.Sequential(nn.Dropout(p), identity_head(2))


def test_bald_zero_without_disagreement_and_positive_with_it() -> None:
    x = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 0.0], [0.0, 6.0]])
    no_dropout = BALD(mc_samples=8).score(dropout_model(0.0), loader(x), [])
    assert torch.equal(no_dropout, torch.zeros(4, dtype=torch.float64))
    scores = BALD(mc_samples=50, seed=3).score(dropout_model(0.5), loader(x, batch_size=3), [])
    assert scores[0] == 0 and scores[2] == 0
    assert (scores[[1, 3]] > 0.05).all() and (scores <= math.log(2) + 1e-12).all()
    assert set(BALD(mc_samples=50, seed=3).select(dropout_model(0.5), loader(x), [], 2).positions.tolist()) == {1, 3}


def test_bald_seeded_and_leaves_global_rng_alone() -> None:
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0)) * 3
    model = dropout_model(0.5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = BALD(mc_samples=5, seed=7).score(model, loader(x), [])
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, BALD(mc_samples=5, seed=7).score(model, loader(x), []))
    assert not torch.equal(first, BALD(mc_samples=5, seed=8).score(model, loader(x), []))


def test_bald_needs_dropout() -> None:
    with pytest.raises(ValueError, match="dropout"):
        BALD().score(identity_head(2), loader(torch.zeros(2, 2)), [])


def head_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith("2.")]


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def test_badge_norms_are_last_layer_gradient_norms() -> None:
    model = small_net()
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    grads, _ = per_sample_grads(model, x, head_names(model))
    norms = BADGE().score(model, loader(x, batch_size=3), [])
    torch.testing.assert_close(norms, grads.norm(dim=1).double(), rtol=1e-5, atol=1e-6)


def brute_kmeans_pp(emb: Tensor, k: int, gen: torch.Generator) -> list[int]:
    """k-means++ seeding on explicit embeddings, drawing exactly as the factored version does."""
    chosen = [int(torch.argmax(emb.norm(dim=1)))]
    while len(chosen) < k:
        d2 = torch.cdist(emb, emb[chosen]).pow(2).min(1).values
        d2[chosen] = 0
        chosen.append(int(torch.multinomial(d2, 1, generator=gen)))
    return chosen


def test_badge_factored_kmeans_pp_equals_explicit_embeddings() -> None:
    model = small_net(2)
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(3))
    a, h = gradient_embedding_factors(model, loader(x, batch_size=7))
    explicit = (a[:, :, None] * h[:, None, :]).reshape(40, -1)
    grads, _ = per_sample_grads(model, x, head_names(model))
    weight_part = explicit.reshape(40, 3, 6)[:, :, :5].reshape(40, -1)
    torch.testing.assert_close(weight_part, grads[:, :15].double(), rtol=1e-5, atol=1e-6)
    for seed in range(3):
        got = kmeans_pp(a, h, 8, torch.Generator().manual_seed(seed)).tolist()
        assert got == brute_kmeans_pp(explicit, 8, torch.Generator().manual_seed(seed))
        assert got == BADGE(seed=seed).select(model, loader(x), [], 8).positions.tolist()


def test_badge_picks_one_point_per_separated_cluster() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[20.0, 0, 0], [0, 20.0, 0], [0, 0, 20.0]])
    x = (centers.repeat_interleave(10, 0) + 0.01 * torch.randn(30, 3, generator=gen))
    head = nn.Linear(3, 3)
    with torch.no_grad():  # a weak head: probabilities stay far from one-hot, so every embedding is large
        head.weight.copy_(0.01 * torch.eye(3))
        head.bias.zero_()
    for seed in range(5):
        picked = BADGE(seed=seed).select(head, loader(x, batch_size=8), [], 3).positions
        assert sorted((picked // 10).tolist()) == [0, 1, 2]


def test_kmeans_pp_draws_proportionally_to_squared_distance() -> None:
    # Points on a line through a (C = 1): squared distance to the first center (largest norm, h = 3) is
    # (3 - h)^2, so the second draw picks h = 1 or h = 2 with probabilities 4/5 and 1/5.
    a = torch.ones(3, 1, dtype=torch.float64)
    h = torch.tensor([[3.0], [1.0], [2.0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    second = torch.tensor([kmeans_pp(a, h, 2, gen)[1].item() for _ in range(2000)])
    assert kmeans_pp(a, h, 1, gen).tolist() == [0]
    assert abs((second == 1).double().mean().item() - 0.8) < 0.03


def test_kmeans_pp_never_repeats_duplicates() -> None:
    a, h = torch.ones(5, 2, dtype=torch.float64), torch.ones(5, 3, dtype=torch.float64)
    picked = kmeans_pp(a, h, 4, torch.Generator().manual_seed(0))
    assert len(set(picked.tolist())) == 4


def brute_k_center(pool: list[list[float]], centers: list[list[float]], k: int) -> list[int]:
    """Textbook k-center greedy with explicit loops."""
    def dist(p: list[float], q: list[float]) -> float:
        return sum((u - v) ** 2 for u, v in zip(p, q))

    chosen: list[int] = []
    for _ in range(k):
        best, best_d = -1, -1.0
        for i, p in enumerate(pool):
            if i in chosen:
                continue
            d = min([dist(p, c) for c in centers + [pool[j] for j in chosen]], default=math.inf)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_coreset_equals_brute_force_k_center_greedy() -> None:
    gen = torch.Generator().manual_seed(0)
    pool, lab = torch.rand(40, 2, generator=gen) * 10, torch.rand(5, 2, generator=gen) * 10
    model = nn.Linear(2, 3)  # the head's input is the feature: the raw 2-D point
    expected = brute_k_center(pool.tolist(), lab.tolist(), 7)
    for chunk in (3, 1024):
        labeled = loader(lab, torch.zeros(5, dtype=torch.long), batch_size=2)
        picked = Coreset(chunk_size=chunk).select(model, loader(pool, batch_size=6), labeled, 7).positions
        assert picked.tolist() == expected
    scores = Coreset().score(model, loader(pool), loader(lab, torch.zeros(5, dtype=torch.long)))
    torch.testing.assert_close(scores, torch.cdist(pool, lab).min(1).values.double(), rtol=1e-5, atol=1e-5)


def test_coreset_takes_farthest_from_labeled_first() -> None:
    pool = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.0, 3.0], [-4.9, 0.0]])
    labeled = loader(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    # 5 is farthest from the origin; then -4.9 (9.9 from the new center), then (0, 3), then (1, 0).
    assert Coreset().select(nn.Linear(2, 2), loader(pool), labeled, 4).positions.tolist() == [1, 3, 2, 0]


def test_coreset_without_labeled_samples_starts_from_a_seeded_point() -> None:
    pool = torch.rand(20, 2, generator=torch.Generator().manual_seed(1))
    empty = loader(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    picked = Coreset(seed=4).select(nn.Linear(2, 2), loader(pool), empty, 5).positions.tolist()
    first = picked[0]
    rest = brute_k_center(pool.tolist(), [pool[first].tolist()], 5)
    assert picked == [first] + [i for i in rest if i != first][:4]
    assert picked == Coreset(seed=4).select(nn.Linear(2, 2), loader(pool), empty, 5).positions.tolist()
    assert len(set(Coreset().select(nn.Linear(2, 2), loader(torch.ones(4, 2)), empty, 4).positions.tolist())) == 4


def test_exp4p_moves_toward_the_rewarded_arm() -> None:
    bandit = Exp4P(3, horizon=20)
    history = [bandit.probabilities()[0].item()]
    for _ in range(15):
        bandit.update(0, 1.0)
        p = bandit.probabilities()
        history.append(p[0].item())
        assert abs(p.sum().item() - 1) < 1e-12 and (p >= bandit.p_min - 1e-12).all()
    assert all(b > a for a, b in zip(history, history[1:]))
    assert history[-1] > 0.55 and p[1] == p[2]


class Oracle(Strategy):
    """Queries pool samples that the fixed model gets right (``good``) or wrong, from the true labels."""

    def __init__(self, good: bool) -> None:
        super().__init__()
        self.good = good

    def score(self, model, pool_loader, labeled_loader, **options) -> Tensor:
        x, y = pool_loader.dataset.tensors
        right = (model(x).argmax(1) == y).double()
        scores = right if self.good else 1 - right
        return scores + torch.arange(len(y)) * 1e-6


def simulate(albl: ALBL, model_after: Callable[[ALBL], nn.Module], x: Tensor, y: Tensor, labeled: list[int],
             rounds: int, b: int = 2) -> list[list[int]]:
    """An active-learning loop: label the queried samples, then "retrain" with ``model_after``."""
    queried = []
    model = model_after(albl)
    for r in range(rounds):
        pool = [i for i in range(len(x)) if i not in labeled]
        lab = loader(x[labeled], y[labeled], batch_size=3, shuffle=True, seed=r)
        picked = albl.select(model, loader(x[pool], y[pool]), lab, b).positions.tolist()
        queried.append([pool[i] for i in picked])
        labeled = labeled + queried[-1]
        model = model_after(albl)
    return queried


def albl_problem() -> tuple[nn.Module, Tensor, Tensor]:
    """A fixed identity-logit model that gets half of 200 labels right."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=gen)
    y = x.argmax(1)
    y[torch.randperm(200, generator=gen)[:100]] ^= 1
    return identity_head(2), x, y


def test_albl_learns_to_prefer_the_strategy_that_earns_reward() -> None:
    # "Training" after the Good arm's query yields a perfect model, after the other arm an always-wrong one,
    # so the reward is 1 for one arm and 0 for the other.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=gen)
    y = x.argmax(1)
    perfect, wrong = identity_head(2), identity_head(2)
    with torch.no_grad():
        wrong.weight.neg_()
    for good in (0, 1):
        arms = [Random(seed=1), Random(seed=2)]
        albl = ALBL(arms, seed=0, horizon=30)
        simulate(albl, lambda a, g=good: perfect if a.last_strategy is a.strategies[g] else wrong, x, y,
                 list(range(4)), 30)
        assert albl.probabilities[good] > 0.65


def test_albl_reward_is_importance_weighted_accuracy() -> None:
    model, x, y = albl_problem()
    albl = ALBL([Oracle(good=True), Oracle(good=False)], seed=1)
    labeled = [0, 1, 2, 3]
    queried = simulate(albl, lambda _: model, x, y, labeled, 1)[0]
    q = albl.probabilities[albl.strategies.index(albl.last_strategy)].item()
    simulate(albl, lambda _: model, x, y, labeled + queried, 1)
    right = (model(x).argmax(1) == y).double()
    expected = (right[labeled].sum() + right[queried].sum() / q) / (len(labeled) + len(queried) / q)
    assert albl.last_reward == pytest.approx(expected.item())


def test_albl_state_dict_round_trip_and_seeding() -> None:
    model, x, y = albl_problem()

    def fixed(_: ALBL) -> nn.Module:
        return model

    first = ALBL([Oracle(good=True), Oracle(good=False)], seed=5)
    queried = simulate(first, fixed, x, y, list(range(4)), 3)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = ALBL([Oracle(good=True), Oracle(good=False)], seed=5)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    labeled = list(range(4)) + sum(queried, [])
    assert simulate(resumed, fixed, x, y, labeled, 4) == simulate(first, fixed, x, y, labeled, 4)
    torch.testing.assert_close(resumed.probabilities, first.probabilities)
    again = ALBL([Oracle(good=True), Oracle(good=False)], seed=5)
    assert simulate(again, fixed, x, y, list(range(4)), 3) == queried
    with pytest.raises(ValueError, match="strategies"):
        ALBL([Oracle(good=True)]).load_state_dict(first.state_dict())


def test_albl_warns_when_queried_samples_cannot_be_recognised() -> None:
    model, x, y = albl_problem()
    albl = ALBL([Oracle(good=True)], seed=0)
    picked = albl.select(model, loader(x[4:], y[4:]), loader(x[:4], y[:4]), 2).positions + 4
    labeled = torch.cat([torch.arange(4), picked])
    with pytest.warns(UserWarning, match="none of last round"):
        albl.select(model, loader(x, y), loader(x[labeled] + 1e-3, y[labeled]), 2)


STRATEGIES = [Entropy, Margin, LeastConfidence, lambda: BALD(mc_samples=3), BADGE, Coreset,
              lambda: ALBL([Entropy(), BADGE(), Coreset()], seed=2)]


@pytest.mark.filterwarnings("ignore:ALBL found none")
@pytest.mark.parametrize("make", STRATEGIES)
def test_modes_and_batchnorm_statistics_are_restored(make) -> None:
    model = mixed_model()
    model.fc.eval()  # a mixed state must come back as it was
    modes = [m.training for m in model.modules()]
    stats = [t.clone() for t in model.bn.buffers()]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 1, 6, 6, generator=gen), torch.randint(3, (20,), generator=gen)
    strategy = make()
    for _ in range(2):
        picked = strategy.select(model, loader(x[5:]), loader(x[:5], y[:5]), 4).positions
        assert len(set(picked.tolist())) == 4 and 0 <= picked.min() and picked.max() < 15
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(stats, model.bn.buffers()))


@pytest.mark.parametrize("make", STRATEGIES)
def test_deterministic_for_a_seed(make) -> None:
    model = mixed_model(1)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 1, 6, 6, generator=gen), torch.randint(3, (30,), generator=gen)
    runs = [make().select(model, loader(x[6:]), loader(x[:6], y[:6]), 5).positions for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("make", STRATEGIES[:-1])
def test_non_finite_outputs_raise(make) -> None:
    model = mixed_model().eval()
    with torch.no_grad():
        model.conv.weight[0, 0, 0, 0] = math.nan
    x, y = torch.randn(8, 1, 6, 6), torch.randint(3, (8,))
    with pytest.raises(NonFiniteScoresError):
        make().select(model, loader(x[2:]), loader(x[:2], y[:2]), 2)
