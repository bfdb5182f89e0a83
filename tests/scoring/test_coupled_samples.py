"""Models whose batch couples its samples: BatchNorm without running statistics (batch statistics in eval mode too),
an embedding scaling its gradient by the batch's token counts, features standardised over the batch. The pool's
samples are scored alone (the exact path), so ``G_S`` must sum the labeled samples' gradients taken alone too, and
each pseudo label must be that of the sample's own forward; scores match per-sample autograd for every gamma."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical.scoring import summed_gradient
from lightning_dynamical.scoring.common import coupled_samples
from tests.helpers.brute_force import any_per_sample_grads, assert_dynamical_exact

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]


class NoRunningStats(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, track_running_stats=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.bn(self.c(x))).mean((2, 3)))


class Standardised(nn.Module):
    """Features standardised over the batch: nothing in the modules says so, only a forward of fewer samples."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.c(x)).mean((2, 3))
        return self.fc((h - h.mean(0, keepdim=True)) / (h.std(0, keepdim=True, unbiased=False) + 1))


class CountScaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 5, scale_grad_by_freq=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, ids: Tensor) -> Tensor:
        return self.fc(torch.tanh(self.emb(ids)).mean(1))


def _data(name: str, n: int) -> Tensor:
    if name == "count_scaled":
        return torch.randint(0, 6, (n, 7))  # few tokens: counts above one in every batch
    return torch.randn(n, 3, 6, 6, dtype=torch.float64)


MODELS = {"no_running_stats": NoRunningStats, "standardised": Standardised, "count_scaled": CountScaled}


@pytest.mark.parametrize("engine", ["auto", "func"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_coupled_batches_score_each_sample_alone(name: str, engine: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().double()
    pool_x, lab_x, lab_y = _data(name, 8), _data(name, 5), torch.tensor([0, 1, 2, 0, 1])
    g = any_per_sample_grads(model.eval(), pool_x)
    g_s = any_per_sample_grads(model, lab_x, lab_y).sum(0)
    model.train()
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(8, dtype=torch.long)), batch_size=4)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=5)
    assert_dynamical_exact(model, pool, labeled, g, g_s, engine=engine)


def test_independent_batches_keep_one_backward_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()
    calls: list[int] = []
    real = torch.autograd.grad

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted)
    data = DataLoader(TensorDataset(torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2] * 2)), batch_size=3)
    summed_gradient(model, data, dict(model.named_parameters()))
    assert len(calls) == 2
    assert coupled_samples(model) is None
    assert "scale_grad_by_freq" in coupled_samples(CountScaled())
    assert "batch statistics" in coupled_samples(NoRunningStats().eval())


def test_a_batch_of_two_samples_repeated_in_equal_numbers_does_not_hide_batch_statistics() -> None:
    """``[A, B, A, B]`` has the mean and spread of ``[B, A]``: a probe of that pair would see equal logits, and its
    evidence would stand for the next batch of the same shapes."""
    torch.manual_seed(0)
    model = Standardised().double()
    a, b = _data("standardised", 2)
    pool_x = torch.cat([torch.stack([a, b, a, b]), _data("standardised", 4)])
    lab_x, lab_y = torch.stack([a, b, a, b]), torch.tensor([0, 1, 2, 1])
    g = any_per_sample_grads(model.eval(), pool_x)
    g_s = any_per_sample_grads(model, lab_x, lab_y).sum(0)
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(8, dtype=torch.long)), batch_size=4)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=4)
    assert_dynamical_exact(model.train(), pool, labeled, g, g_s)


class Centred(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(10, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.l1(x)
        return self.fc(torch.tanh(h - h.mean(0, keepdim=True)))


@pytest.mark.parametrize("engine", ["auto", "func"])
def test_a_blend_whose_batch_mean_equals_one_probe_is_caught_by_the_other(engine: str) -> None:
    """``[B, A, (2A + B) / 3, A]`` has the mean of ``[A, B, A]``; ``[B, A, B]`` has another."""
    torch.manual_seed(0)
    model = Centred().double()
    a, b = torch.randn(2, 10, dtype=torch.float64)
    pool_x = torch.cat([torch.stack([b, a, (2 * a + b) / 3, a]), torch.randn(4, 10, dtype=torch.float64)])
    lab_x, lab_y = torch.stack([b, a, (2 * a + b) / 3, a]), torch.tensor([0, 1, 2, 0])
    g = any_per_sample_grads(model.eval(), pool_x)
    g_s = any_per_sample_grads(model, lab_x, lab_y).sum(0)
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(8, dtype=torch.long)), batch_size=4)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=4)
    assert_dynamical_exact(model, pool, labeled, g, g_s, engine=engine)
