"""Strategies under a task other than classification: ``use_task``'s refusals, uncertainty of segmentation and
multi-label outputs, BADGE's segmentation and multi-label embeddings against autograd, DynamicAL's task."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import lightning_dynamical.strategies.uncertainty as uncertainty_module
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.strategies.albl import ALBL
from lightning_dynamical.strategies.badge import BADGE, gradient_embedding_factors, kmeans_pp
from lightning_dynamical.strategies.bald import BALD
from lightning_dynamical.strategies.base import Strategy
from lightning_dynamical.strategies.coreset import Coreset
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.random import Random
from lightning_dynamical.strategies.uncertainty import Entropy, LeastConfidence, Margin
from lightning_dynamical.tasks import CLASSIFICATION, Classification, MultiLabel, Segmentation, Task
from tests.helpers.brute_force import UNCERTAINTY_FORMULAS, entropy_of
from tests.helpers.models import trained_like
from tests.strategies.test_strategies import brute_kmeans_pp, loader

pytestmark = pytest.mark.usefixtures("one_thread")

SEG, MULTI = Segmentation(), MultiLabel()


class TinySegNet(nn.Module):
    """Conv-BN-ReLU features, a 1x1 convolution head: logits ``(batch, 3, H, W)``."""

    def __init__(self, bias: bool = True, upsample: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, stride=2 if upsample else 1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 3, 1, bias=bias)
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(torch.relu(self.bn(self.conv(x))))
        return nn.functional.interpolate(logits, size=x.shape[2:]) if self.upsample else logits


def seg_problem(dtype: torch.dtype = torch.float64, seed: int = 0, **kwargs: bool) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(seed)
    model = trained_like(TinySegNet(**kwargs), torch.randn(8, 1, 5, 4)).to(dtype)
    return model, torch.randn(11, 1, 5, 4, dtype=dtype)


def used(strategy: Strategy, task: Task) -> Strategy:
    strategy.use_task(task)
    return strategy


# --- use_task: which strategy applies to which task, and the refusals' one line --------------------------------

REFUSED = [
    (Coreset(), SEG, "its k-center greedy needs one feature vector per sample, and a segmentation head sees one "
                     "per pixel"),
    (BALD(), SEG, "its mutual information is that of one softmax"),
    (BALD(), MULTI, "its mutual information is that of one softmax"),
    (ALBL(), SEG, "its reward is the accuracy of one class index per sample"),
    (ALBL(), MULTI, "its reward is the accuracy of one class index per sample"),
    (Margin(), MULTI, "per-label margins have no one standard combination"),
    (LeastConfidence(), MULTI, "per-label confidences have no one standard combination"),
    (Strategy(), SEG, "it reads the logits as one softmax over the classes per sample"),
]


@pytest.mark.parametrize(("strategy", "task", "reason"), REFUSED, ids=lambda v: type(v).__name__)
def test_refusal_names_strategy_task_and_reason_in_one_line(strategy: Strategy, task: Task, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        strategy.check_task(task)
    message = str(err.value)
    assert message.startswith(f"{type(strategy).__name__} does not apply to the {task.name} task: ")
    assert reason in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="does not apply"):
        strategy.use_task(task)
    assert strategy.task == CLASSIFICATION  # refused: unchanged


ACCEPTED = {
    Random: (Classification, MultiLabel, Segmentation),
    Entropy: (Classification, MultiLabel, Segmentation),
    Margin: (Classification, Segmentation),
    LeastConfidence: (Classification, Segmentation),
    BADGE: (Classification, MultiLabel, Segmentation),
    Coreset: (Classification, MultiLabel),
    BALD: (Classification,),
    ALBL: (Classification,),
    DynamicAL: (Classification, MultiLabel, Segmentation),
}


@pytest.mark.parametrize("cls", list(ACCEPTED), ids=lambda c: c.__name__)
def test_each_strategy_takes_exactly_its_tasks(cls: type[Strategy]) -> None:
    for task_cls in (Classification, MultiLabel, Segmentation):
        strategy = cls()
        if task_cls in ACCEPTED[cls]:
            strategy.use_task(task_cls())
            assert strategy.task == task_cls()
        else:
            with pytest.raises(ConfigError):
                strategy.use_task(task_cls())


def test_use_task_refuses_a_non_task() -> None:
    with pytest.raises(ConfigError, match="Entropy needs a Task"):
        Entropy().use_task("segmentation")  # type: ignore[arg-type]


def test_albl_passes_its_task_to_its_strategies() -> None:
    task = Classification()
    albl = used(ALBL(), task)
    assert all(s.task is task for s in albl.strategies)
    with pytest.raises(ConfigError, match="BALD does not apply to the multi-label task"):
        ALBL(strategies=[BALD()]).strategies[0].use_task(MULTI)


def test_repr_leaves_the_default_task_out_and_shows_another_last() -> None:
    assert repr(used(Entropy(), Classification())) == "Entropy()"
    assert repr(used(Random(seed=3), SEG)) == "Random(seed=3, task=Segmentation(ignore_index=-100))"
    assert repr(DynamicAL()) == ("DynamicAL(gamma=2.0, params=None, engine='auto', chunk_size=32, greedy_chunks=1, "
                                 "deinfluence=None)")
    assert repr(DynamicAL(task=MULTI)).endswith("deinfluence=None, task=MultiLabel(threshold=0.5))")


# --- DynamicAL: its own task argument against the loop's ----------------------------------------------------------

def test_dynamical_takes_the_loop_task_unless_given_another() -> None:
    assert used(DynamicAL(), SEG).task == SEG
    assert used(DynamicAL(task=MultiLabel(0.3)), MultiLabel(0.3)).task == MultiLabel(0.3)
    assert used(DynamicAL(task=Classification()), CLASSIFICATION).task == CLASSIFICATION
    strategy = used(DynamicAL(), SEG)
    assert used(strategy, MULTI).task == MULTI  # not given: it follows the loop's every time
    with pytest.raises(ConfigError) as err:
        DynamicAL(task=MULTI).use_task(SEG)
    assert "task=MultiLabel(threshold=0.5)" in str(err.value) and "Segmentation(ignore_index=-100)" in str(err.value)
    assert "\n" not in str(err.value)


# --- uncertainty: per pixel, averaged over the sample; multi-label entropy summed over the labels ---------------

@pytest.mark.parametrize(("make", "formula"), UNCERTAINTY_FORMULAS, ids=["entropy", "least_confidence", "margin"])
def test_segmentation_uncertainty_is_the_mean_over_pixels(make, formula, monkeypatch) -> None:
    model, x = seg_problem(torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(x).double()
    expected = []
    for n in range(x.shape[0]):
        pixels = [torch.softmax(logits[n, :, i, j], 0).tolist() for i in range(5) for j in range(4)]
        expected.append(sum(formula(p) for p in pixels) / len(pixels))

    shapes: list[tuple[int, ...]] = []
    collect = uncertainty_module.collect

    def spy(model, loader, fn, *args):  # every batch leaves as (batch,), never (batch, C, H, W)
        def recorded(x):
            out = fn(x)
            shapes.extend(tuple(t.shape) for t in out)
            return out
        return collect(model, loader, recorded, *args)

    monkeypatch.setattr(uncertainty_module, "collect", spy)
    model.train()
    scores = used(make(), SEG).score(model, loader(x, batch_size=4), [])
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float64))
    assert shapes == [(4,), (4,), (3,)]
    assert model.training and model.bn.training


def test_multilabel_entropy_sums_binary_entropies() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5], [40.0, -40.0, 0.0], [-3.0, 4.0, 1.0]])
    head = nn.Linear(3, 3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
        head.bias.zero_()
    expected = [sum(entropy_of([1 / (1 + math.exp(-z)), 1 / (1 + math.exp(z))]) for z in row)
                for row in logits.tolist()]
    scores = used(Entropy(), MULTI).score(head, loader(logits, batch_size=3), [])
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float64))
    assert scores[0] == pytest.approx(3 * math.log(2)) and scores.argmax() == 0
    assert used(Entropy(), MULTI).select(head, loader(logits), [], 2).positions.tolist() == [0, 1]


# --- BADGE: the gradient embedding of the task's loss at its pseudo targets, against autograd -------------------

def brute_embedding(model: nn.Module, head: nn.Module, x: Tensor, task: Task) -> Tensor:
    """Per sample: autograd of the task's loss at its pseudo targets w.r.t. the head's weight and bias, as rows
    ``[W_c, b_c]`` per class (the order of ``a (x) [h, 1]``)."""
    model.eval()
    rows = []
    for i in range(x.shape[0]):
        logits = model(x[i : i + 1])
        params = [head.weight] + ([head.bias] if head.bias is not None else [])
        grads = torch.autograd.grad(task.loss(logits, task.pseudo_targets(logits)), params)
        w = grads[0].reshape(grads[0].shape[0], -1)
        rows.append(torch.cat([w, grads[1][:, None]], 1).reshape(-1) if len(grads) == 2 else w.reshape(-1))
    return torch.stack(rows).detach()


@pytest.mark.parametrize("bias", [True, False])
def test_badge_segmentation_embedding_matches_autograd(bias: bool) -> None:
    model, x = seg_problem(bias=bias)
    a, h = gradient_embedding_factors(model, loader(x, batch_size=4), task=SEG)
    ref = brute_embedding(model, model.head, x, SEG)
    assert a.shape == (11, 3 * (4 + bias)) and torch.equal(h, torch.ones(11, 1, dtype=torch.float64))
    torch.testing.assert_close(a, ref, rtol=1e-10, atol=1e-12)
    badge = used(BADGE(), SEG)
    torch.testing.assert_close(badge.score(model, loader(x), []), ref.norm(dim=1), rtol=1e-10, atol=1e-12)
    for seed in range(3):  # a (x) [1] = a: the factored seeding runs on the explicit embedding
        got = kmeans_pp(a, h, 5, torch.Generator().manual_seed(seed)).tolist()
        assert got == brute_kmeans_pp(ref, 5, torch.Generator().manual_seed(seed))
        assert got == used(BADGE(seed=seed), SEG).select(model, loader(x, batch_size=3), [], 5).positions.tolist()


def test_badge_multilabel_embedding_matches_autograd() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    a, h = gradient_embedding_factors(model, loader(x, batch_size=4), task=MULTI)
    explicit = (a[:, :, None] * h[:, None, :]).reshape(9, -1)
    torch.testing.assert_close(explicit, brute_embedding(model, model[2], x, MULTI), rtol=1e-10, atol=1e-12)


def test_badge_segmentation_needs_the_logits_from_a_1x1_convolution() -> None:
    model, x = seg_problem(upsample=True)
    with pytest.raises(ValueError, match=r"must be the output of the model's last 1x1 convolution .* shape"):
        used(BADGE(), SEG).score(model, loader(x), [])
    no_head = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1))
    with pytest.raises(ValueError, match="needs a 1x1 convolution head"):
        used(BADGE(), SEG).score(no_head, loader(x.float()), [])


# --- the contract end to end: every strategy that takes segmentation scores a segmentation pool -----------------

@pytest.mark.parametrize("make", [Random, Entropy, Margin, LeastConfidence, BADGE, DynamicAL])
def test_segmentation_strategies_select_from_a_segmentation_pool(make: Callable[[], Strategy]) -> None:
    model, x = seg_problem(torch.float32)
    strategy = used(make(), SEG)
    scores = strategy.score(model, loader(x, batch_size=4), [])
    assert scores.shape == (11,) and bool(torch.isfinite(scores).all())
    positions = strategy.select(model, loader(x, batch_size=4), [], 3).positions
    assert len(set(positions.tolist())) == 3
