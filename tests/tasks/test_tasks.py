"""The task abstraction: Classification is what scoring hard-coded before, and a task whose loss is not a sum of
per-sample losses is scored on the exact path (the fast and last-layer closed forms rely on that sum)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import ConfigError, DynamicAL
from lightning_dynamical.scoring import NotLastLayerError, evaluation, make_engine, select_parameters
from lightning_dynamical.tasks import CLASSIFICATION, Classification, MultiLabel, Task
from lightning_dynamical.tasks.batches import forward_logits, logits_of
from tests.helpers.brute_force import dynamical_scores
from tests.helpers.models import TinyCNN, trained_like

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*scored on a slow exact path:UserWarning")]


@dataclass(frozen=True)
class MeanClassification(Classification):
    """Cross-entropy averaged over the batch: a batch of one is the per-sample loss, a larger batch is not."""

    sums_over_samples = False

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits, targets)


@dataclass(frozen=True)
class ClaimedSum(MeanClassification):
    """The same batch mean, wrongly stated as a sum: the closed forms then scale every gradient by 1 / batch."""

    sums_over_samples = True


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    model = trained_like(TinyCNN(), torch.randn(16, 1, 6, 6)).double()
    pool_x = torch.randn(11, 1, 6, 6, dtype=torch.float64)
    lab_x = torch.randn(7, 1, 6, 6, dtype=torch.float64)
    lab_y = torch.randint(0, 4, (7,))
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(11, dtype=torch.long)), batch_size=4)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=3)
    return model, pool, labeled, pool_x, lab_x, lab_y


def test_classification_is_cross_entropy_summed_and_argmax():
    torch.manual_seed(0)
    logits, y = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0])
    task = Classification()
    assert task == CLASSIFICATION and repr(task) == "Classification()" and task.sums_over_samples
    assert torch.equal(task.loss(logits, y), nn.functional.cross_entropy(logits, y, reduction="sum"))
    assert torch.equal(task.pseudo_targets(logits), logits.argmax(1))
    z = logits.clone().requires_grad_()
    auto = torch.autograd.grad(task.loss(z, y), z)[0]
    torch.testing.assert_close(task.output_gradient(logits, y), auto, rtol=1e-12, atol=1e-12)
    soft = torch.softmax(torch.randn(5, 3, dtype=torch.float64), 1)
    assert torch.equal(task.prepare_targets(soft, logits), soft)
    torch.testing.assert_close(task.output_gradient(logits, soft),
                               torch.autograd.grad(task.loss(z, soft), z)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("targets", [torch.zeros(5), torch.zeros(5, 1, dtype=torch.long), torch.zeros(4).long(),
                                     torch.zeros(5, 3, dtype=torch.long)])
def test_classification_refuses_targets_in_one_line(targets):
    with pytest.raises(ValueError, match=r"^The classification task needs targets of shape \(batch,\) .* for logits "
                                         r"of shape \(5, 3\); got \(") as err:
        Classification().prepare_targets(targets, torch.zeros(5, 3))
    assert "\n" not in str(err.value) and str(tuple(targets.shape)) in str(err.value)


@pytest.mark.parametrize("task", [Classification(), MultiLabel()])
@pytest.mark.parametrize("shape", [(6,), (2, 3, 4), (3, 3)])
def test_check_output_names_task_seen_and_expected_shapes(task, shape):
    with pytest.raises(ValueError) as err:
        logits_of(torch.zeros(shape), 2, task)
    message = str(err.value)
    assert "\n" not in message and task.name in message and task.logits_shape in message
    assert f"got {shape} for a batch of 2" in message
    with pytest.raises(ValueError, match=r"got dict for a batch of 2"):
        logits_of({"scores": torch.zeros(2, 3)}, 2, task)
    assert task.check_output(torch.zeros(2, 3), 2).shape == (2, 3)


def test_dynamical_takes_a_task_and_keeps_its_repr():
    assert repr(DynamicAL()) == repr(DynamicAL(task=Classification()))
    assert "task" not in repr(DynamicAL())
    assert "task=MultiLabel(threshold=0.25)" in repr(DynamicAL(task=MultiLabel(0.25)))
    with pytest.raises(ConfigError, match="task must be null or a Task"):
        DynamicAL(task="multilabel")  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ["fast", "auto", "func"])
@pytest.mark.parametrize("params", [None, "last_layer"])
def test_a_task_without_a_per_sample_sum_is_scored_exactly(engine, params):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem()
    names = ["fc.weight", "fc.bias"] if params == "last_layer" else None
    strategy = DynamicAL(gamma=2.0, params=params, engine=engine, chunk_size=3, task=MeanClassification())
    scores = strategy.score(model, pool, labeled)
    # per-sample loss = the mean loss of a batch of one = CE; G_S is the gradient of the labeled batches' means
    ref_sq = dynamical_scores(model, pool_x, lab_x, lab_y, 0.0, names)
    ref_dot = sum(dynamical_scores(model, pool_x, lab_x[i: i + 3], lab_y[i: i + 3], math.inf, names)
                  / len(lab_y[i: i + 3]) for i in range(0, 7, 3))
    ref = ref_sq + 2.0 * ref_dot
    assert (scores - ref).abs().max() <= 1e-9 * ref.abs().max()
    paths = strategy.explain(model, next(iter(pool)))
    assert all(p.path in ("vmap", "loop") for p in paths), paths
    if engine != "func":
        assert all("sums_over_samples is False" in p.reason for p in paths), paths


def test_the_closed_forms_trust_the_task_statement():
    """A batch mean stated as a sum gets gradients scaled by 1 / batch on the fast path: the statement matters."""
    model, pool, labeled, pool_x, *_ = _problem(1)
    with evaluation(model):
        theta = select_parameters(model)
        x = pool_x[:4]
        right = make_engine("fast").batch_statistics(model, x, theta, [], MeanClassification())[0]
        wrong = make_engine("fast").batch_statistics(model, x, theta, [], ClaimedSum())[0]
        plain = make_engine("fast").batch_statistics(model, x, theta, [], CLASSIFICATION)[0]
    torch.testing.assert_close(right, plain, rtol=1e-9, atol=0)
    torch.testing.assert_close(wrong, plain / 16, rtol=1e-9, atol=0)


def test_last_layer_engine_refuses_a_task_it_cannot_cover():
    model, _, _, pool_x, *_ = _problem(2)
    with evaluation(model):
        theta = select_parameters(model, "last_layer")
        with pytest.raises(NotLastLayerError, match="sums_over_samples is False"):
            make_engine("last_layer").batch_statistics(model, pool_x[:3], theta, [], MeanClassification())


def test_a_custom_task_needs_only_the_abstract_methods():
    """A task written from scratch (not a dataclass), with the autograd output gradient of the base class."""

    class Squared(Task):
        name = "squared logits"
        logits_shape = "(batch, outputs)"

        def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
            return 0.5 * (logits - targets).pow(2).sum()

        def pseudo_targets(self, logits: Tensor) -> Tensor:
            return logits.detach().round()

        def logits_ok(self, logits: Tensor) -> bool:
            return logits.ndim == 2

        def prepare_targets(self, targets: Tensor, logits: Tensor) -> Tensor:
            return targets.to(logits)

    model, pool, labeled, pool_x, *_ = _problem(3)
    task = Squared()
    with evaluation(model):
        theta = select_parameters(model, "last_layer")
        sq = {e: make_engine(e).batch_statistics(model, pool_x, theta, [], task)[0]
              for e in ("fast", "func", "last_layer")}
        logits = forward_logits(model, pool_x, task)
        h = torch.relu(model.bn(model.conv(pool_x))).mean((2, 3))  # the head's input (dropout is off in eval mode)
    for name, value in sq.items():
        torch.testing.assert_close(value, sq["func"], rtol=1e-9, atol=1e-12, msg=name)
    e = logits - logits.round()  # d loss / d logits at the pseudo targets
    torch.testing.assert_close(sq["func"], e.pow(2).sum(1) * (h.pow(2).sum(1) + 1), rtol=1e-9, atol=1e-12)
