"""MultiLabel: DynamicAL scores exactly, against a brute-force per-sample autograd loop written here from scratch
(binary cross-entropy by hand, pseudo targets ``sigmoid > threshold``), in float64, on a model with BatchNorm
and dropout scored in eval mode."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import ConfigError, DynamicAL
from lightning_dynamical.scoring.diagnostics import query_regime
from lightning_dynamical.tasks import MultiLabel
from tests.helpers.models import trained_like

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = 5


class MultiLabelNet(nn.Module):
    """Conv-BN-ReLU, Linear-BN1d-ReLU, dropout, a Linear head of one logit per label."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.hidden = nn.Linear(4, 6)
        self.bn1 = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.4)
        self.fc = nn.Linear(6, LABELS)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(self.drop(torch.relu(self.bn1(self.hidden(h)))))


def _bce(logits: Tensor, targets: Tensor) -> Tensor:
    """``sum_k -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]``, by hand."""
    return -(targets * nn.functional.logsigmoid(logits) + (1 - targets) * nn.functional.logsigmoid(-logits)).sum()


def _flat_grad(model: nn.Module, loss: Tensor, names: list[str]) -> Tensor:
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(params[n])).reshape(-1) for n, g in zip(names, grads)])


def gradients(model: nn.Module, pool_x: Tensor, lab_x: Tensor, lab_y: Tensor, threshold: float,
              names: list[str] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(g (N, P), G_S (P,), pseudo targets (N, K))``: one forward and one ``autograd.grad`` per sample, eval mode
    (restored)."""
    names = names or [n for n, p in model.named_parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        rows, pseudo = [], []
        for i in range(pool_x.shape[0]):
            logits = model(pool_x[i: i + 1])
            y = (torch.sigmoid(logits) > threshold).double().detach()
            rows.append(_flat_grad(model, _bce(logits, y), names))
            pseudo.append(y[0])
        g = torch.stack(rows)
        g_s = sum(_flat_grad(model, _bce(model(lab_x[i: i + 1]), lab_y[i: i + 1]), names)
                  for i in range(lab_x.shape[0]))
    finally:
        model.train(was_training)
    return g.detach(), g_s.detach(), torch.stack(pseudo)


def brute_force(model: nn.Module, pool_x: Tensor, lab_x: Tensor, lab_y: Tensor, gamma: float, threshold: float,
                names: list[str] | None = None) -> tuple[Tensor, Tensor]:
    """``(scores, pseudo targets)`` of :func:`gradients`."""
    g, g_s, pseudo = gradients(model, pool_x, lab_x, lab_y, threshold, names)
    sq, dots = g.pow(2).sum(1), g @ g_s
    scores = sq if gamma == 0 else dots if math.isinf(gamma) else sq + gamma * dots
    return scores, pseudo


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    model = trained_like(MultiLabelNet(), torch.randn(16, 2, 5, 5)).double()
    with torch.no_grad():
        model.fc.bias.copy_(torch.linspace(-1.5, 1.5, LABELS))  # some labels mostly on, some mostly off
    pool_x = torch.randn(13, 2, 5, 5, dtype=torch.float64)
    lab_x = torch.randn(9, 2, 5, 5, dtype=torch.float64)
    lab_y = (torch.rand(9, LABELS) < 0.4).float()  # float32 0/1 targets: cast to the logits' dtype by the task
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(13, LABELS)), batch_size=5)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=4)
    return model, pool, labeled, pool_x, lab_x, lab_y.double()


def test_multilabel_loss_pseudo_targets_and_checks():
    torch.manual_seed(0)
    logits = torch.randn(4, LABELS, dtype=torch.float64)
    y = (torch.rand(4, LABELS) < 0.5).double()
    task = MultiLabel()
    assert task.threshold == 0.5 and task == MultiLabel(0.5) and task != MultiLabel(0.3)
    torch.testing.assert_close(task.loss(logits, y), _bce(logits, y), rtol=1e-12, atol=1e-12)
    pseudo = task.pseudo_targets(logits)
    assert pseudo.dtype == torch.float64 and torch.equal(pseudo, (logits > 0).double())
    assert torch.equal(MultiLabel(0.9).pseudo_targets(logits), (torch.sigmoid(logits) > 0.9).double())
    z = logits.clone().requires_grad_()
    torch.testing.assert_close(task.output_gradient(logits, y), torch.autograd.grad(_bce(z, y), z)[0],
                               rtol=1e-12, atol=1e-12)
    assert task.prepare_targets(y.long(), logits).dtype == torch.float64
    with pytest.raises(ValueError, match=r"multi-label task needs targets of shape \(4, 5\) .*; got \(4,\)"):
        task.prepare_targets(torch.zeros(4, dtype=torch.long), logits)
    with pytest.raises(ValueError, match=r"logits of shape \(batch, labels\) for the multi-label task .* got "
                                         r"\(4, 5, 2\) for a batch of 4"):
        task.check_output(torch.zeros(4, LABELS, 2), 4)
    for bad in (0, 1, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="threshold must be in"):
            MultiLabel(bad)


@pytest.mark.parametrize("gamma", [0.0, 2.0, math.inf])
@pytest.mark.parametrize("params", [None, ["fc.weight", "conv.weight", "bn1.bias"], "last_layer"])
@pytest.mark.parametrize("engine", ["fast", "func", "auto"])
def test_dynamical_multilabel_matches_brute_force_float64(engine, params, gamma):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strategy = DynamicAL(gamma=gamma, params=params, engine=engine, chunk_size=3, task=MultiLabel())
    chosen = strategy.select(model, pool, labeled, 4)
    names = ["fc.weight", "fc.bias"] if params == "last_layer" else params
    ref, pseudo = brute_force(model, pool_x, lab_x, lab_y, gamma, 0.5, names)
    scores = chosen.pool_scores
    assert scores is not None and scores.shape == (13,)
    assert (scores - ref).abs().max() <= 1e-9 * ref.abs().max()
    assert chosen.pseudo_labels is not None and torch.equal(chosen.pseudo_labels, pseudo[chosen.positions])
    assert 0 < pseudo.mean() < 1  # the pseudo targets mix 0 and 1
    assert model.training and model.bn.training and model.bn1.training and model.drop.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("params", [None, "last_layer"])
def test_the_closed_forms_cover_multilabel(params):
    """The fast (and last-layer) paths, not the exact fallback, score a multi-label batch."""
    model, pool, *_ = _problem(1)
    batch = next(iter(pool))
    for engine in ("fast", "auto"):
        paths = DynamicAL(params=params, engine=engine, task=MultiLabel()).explain(model, batch)
        assert all(p.path.startswith(("fast", "last_layer")) for p in paths), paths
    if params == "last_layer":
        paths = DynamicAL(params=params, engine="last_layer", task=MultiLabel()).explain(model, batch)
        assert {p.path for p in paths} == {"last_layer"}


def test_threshold_sets_the_pseudo_targets():
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(2)
    scores = DynamicAL(gamma=2.0, engine="fast", task=MultiLabel(0.7)).score(model, pool, labeled)
    ref, pseudo = brute_force(model, pool_x, lab_x, lab_y, 2.0, 0.7)
    assert (scores - ref).abs().max() <= 1e-9 * ref.abs().max()
    assert not torch.equal(pseudo, brute_force(model, pool_x, lab_x, lab_y, 2.0, 0.5)[1])


def test_greedy_one_by_one_is_the_exact_marginal_gain():
    """``greedy_chunks = b``: each pick maximises ``||G_S + G_Q + g_u||^2 - ||G_S + G_Q||^2``, ``G_Q`` the summed
    gradient of the samples picked so far at their multi-label pseudo targets."""
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(2)
    strategy = DynamicAL(gamma=2.0, greedy_chunks=5, task=MultiLabel())
    chosen = strategy.select(model, pool, labeled, 5).positions.tolist()
    g, total, _ = gradients(model, pool_x, lab_x, lab_y, 0.5)
    gains = []
    for pick in chosen:
        gain = (total + g).pow(2).sum(1) - total.pow(2).sum()
        gain[chosen[: len(gains)]] = -math.inf  # already picked
        assert int(gain.argmax()) == pick
        gains.append(gain[pick])
        total = total + g[pick]
    assert strategy.last_gains is not None
    torch.testing.assert_close(strategy.last_gains, torch.stack(gains), rtol=1e-9, atol=0)


def test_query_regime_for_multilabel():
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(3)
    query = DataLoader(TensorDataset(pool_x[:6], torch.zeros(6, LABELS)), batch_size=4)
    regime = query_regime(model, labeled, query, task=MultiLabel())
    sq = brute_force(model, pool_x[:6], lab_x, lab_y, 0.0, 0.5)[0]
    dots = brute_force(model, pool_x[:6], lab_x, lab_y, math.inf, 0.5)[0]
    assert math.isclose(regime.sqnorm_median, float(sq.median()), rel_tol=1e-9)
    assert math.isclose(regime.dot_median, float(dots.median()), rel_tol=1e-9)
    assert math.isfinite(regime.approximation_ratio)
