"""Strategies under token classification: which apply (and the refusals' one line), uncertainty as the mean over each
sample's real tokens, BADGE's token embedding against autograd of each sample run alone on its real tokens, the
loop's pseudo targets of padded pool batches, and every accepted strategy selecting from a padded token pool."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop.pool_scorer import predictions
from lightning_dynamical.strategies.albl import ALBL
from lightning_dynamical.strategies.badge import BADGE, gradient_embedding_factors, kmeans_pp
from lightning_dynamical.strategies.bald import BALD
from lightning_dynamical.strategies.base import Strategy
from lightning_dynamical.strategies.coreset import Coreset
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.random import Random
from lightning_dynamical.strategies.uncertainty import Entropy, LeastConfidence, Margin
from lightning_dynamical.tasks import TokenClassification
from tests.helpers.brute_force import UNCERTAINTY_FORMULAS
from tests.scoring.test_token_classification import IGNORE, _alone, collate, padded, token_problem
from tests.strategies.test_strategies import brute_kmeans_pp

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:There is a performance drop.*scaled_dot_product:UserWarning")]

TOKENS = TokenClassification()


def used(strategy: Strategy) -> Strategy:
    strategy.use_task(TOKENS)
    return strategy


REFUSED = [
    (Coreset(), "its k-center greedy needs one feature vector per sample, and a segmentation head sees one per pixel "
                "(a token head one per token)"),
    (BALD(), "its mutual information is that of one softmax over the classes per sample"),
    (ALBL(), "its reward is the accuracy of one class index per sample"),
    (Strategy(), "it reads the logits as one softmax over the classes per sample"),
]


@pytest.mark.parametrize(("strategy", "reason"), REFUSED, ids=lambda v: type(v).__name__)
def test_refusal_names_strategy_task_and_reason_in_one_line(strategy: Strategy, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        strategy.use_task(TOKENS)
    message = str(err.value)
    assert message.startswith(f"{type(strategy).__name__} does not apply to the token classification task: ")
    assert reason in message and "\n" not in message


@pytest.mark.parametrize("cls", [Random, DynamicAL, Entropy, Margin, LeastConfidence, BADGE], ids=lambda c: c.__name__)
def test_accepted_strategies_take_the_task(cls: type[Strategy]) -> None:
    assert used(cls()).task == TOKENS


@pytest.mark.parametrize(("make", "formula"), UNCERTAINTY_FORMULAS, ids=["entropy", "least_confidence", "margin"])
def test_uncertainty_is_the_mean_over_real_tokens(make, formula) -> None:
    """Each sample run alone on its real tokens, the formula per token, averaged: padding counts for nothing."""
    model, pool, _, pool_items, _ = token_problem("attention", seed=5)
    with torch.no_grad():
        model.eval()
        expected = []
        for item in pool_items:
            probabilities = torch.softmax(_alone(model, item)[0].double(), -1)
            expected.append(sum(formula(p.tolist()) for p in probabilities) / len(probabilities))
        model.train()
    scores = used(make()).score(model, pool, [])
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    assert all(m.training for m in model.modules())


def brute_embedding(model: nn.Module, items: list[dict[str, Tensor]]) -> Tensor:
    """Per sample, alone on its real tokens: autograd of the task's loss at its argmax w.r.t. the head's weight and
    bias, as rows ``[W_c, b_c]`` per class (the order of ``a (x) [h, 1]``)."""
    model.eval()
    rows = []
    for item in items:
        logits = _alone(model, item)
        params = [model.head.weight] + ([model.head.bias] if model.head.bias is not None else [])
        grads = torch.autograd.grad(TOKENS.loss(logits, logits.argmax(-1)), params)
        rows.append(torch.cat([grads[0], grads[1][:, None]], 1).reshape(-1) if len(grads) == 2
                    else grads[0].reshape(-1))
    model.train()
    return torch.stack(rows).detach()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tagger", ["mlp", "attention"])
def test_badge_token_embedding_matches_autograd(tagger: str, bias: bool) -> None:
    model, pool, _, pool_items, _ = token_problem(tagger, seed=6)
    if not bias:
        model.head.bias = None
    a, h = gradient_embedding_factors(model, pool, task=TOKENS)
    ref = brute_embedding(model, pool_items)
    assert a.shape == (len(pool_items), 5 * (8 + bias)) and torch.equal(h, torch.ones(len(pool_items), 1).double())
    torch.testing.assert_close(a, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(used(BADGE()).score(model, pool, []), ref.norm(dim=1), rtol=1e-9, atol=1e-12)
    for seed in range(2):
        got = kmeans_pp(a, h, 4, torch.Generator().manual_seed(seed)).tolist()
        assert got == brute_kmeans_pp(ref, 4, torch.Generator().manual_seed(seed))
        assert got == used(BADGE(seed=seed)).select(model, pool, [], 4).positions.tolist()


class AfterHead(nn.Module):
    """A tagger whose logits are scaled after its head: the head's input is then not their features."""

    def __init__(self, tagger: nn.Module) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return 2 * self.tagger(input_ids, attention_mask)


def test_badge_needs_the_logits_from_the_token_head() -> None:
    model, pool, *_ = token_problem("mlp")
    with pytest.raises(ValueError, match=r"must be the output of the model's last nn.Linear \(Linear, run once per "
                                         r"forward, nothing after it\); its output differs from them"):
        used(BADGE()).score(AfterHead(model), pool, [])


def test_predictions_leave_padding_out_and_pad_batches_to_the_longest() -> None:
    """The loop's pseudo labels of a queried batch: the argmax at each sample's real tokens, IGNORE elsewhere, over
    batches padded to 5, 7 and 6 tokens."""
    model, pool, _, pool_items, _ = token_problem("attention", seed=7)
    got = predictions(model, pool, TOKENS, "labels")
    model.eval()
    with torch.no_grad():
        expected = padded([_alone(model, item)[0].argmax(-1) for item in pool_items])
    assert torch.equal(got, expected) and int((got != IGNORE).sum()) == sum(len(i["input_ids"]) for i in pool_items)


@pytest.mark.parametrize("make", [Random, Entropy, Margin, LeastConfidence, BADGE, DynamicAL])
def test_token_strategies_select_from_a_padded_pool(make: Callable[[], Strategy]) -> None:
    model, pool, labeled, *_ = token_problem("mlp", seed=8)
    model.float()
    pool32 = DataLoader(pool.dataset, batch_size=2, collate_fn=collate)
    strategy = used(make())
    scores = strategy.score(model, pool32, labeled)
    assert scores.shape == (7,) and bool(torch.isfinite(scores).all())
    positions = strategy.select(model, pool32, labeled, 3).positions
    assert len(set(positions.tolist())) == 3
