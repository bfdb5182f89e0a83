"""The fast engine's probe evidence is remembered per model version and batch signature: a batch with the same
signature skips the probe and still scores exactly; anything that could change what the probe showed (another
model, a parameter updated in place, a module's mode, the inputs' shapes, a branch taken on the data) probes
again, and a branch that mixes samples is caught on the batch that takes it."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lightning_dynamical.scoring import FastEngine, select_parameters
from lightning_dynamical.scoring import fast as fast_module
from tests.helpers.brute_force import per_sample_grads

pytestmark = pytest.mark.usefixtures("one_thread")


class MixesWhenPositive(nn.Module):
    """A CNN that adds the batch mean of its features when the batch's input sum is positive: samples are
    independent on some batches and not on others, and the forward's calls differ between the two."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn(self.conv(x)).relu().mean((2, 3))
        if x.sum() > 0:
            h = h + h.mean(0, keepdim=True)
        return self.head(self.drop(h))


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = MixesWhenPositive().double()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _batch(sign: float, n: int = 6, seed: int = 1) -> Tensor:
    torch.manual_seed(seed)
    x = torch.randn(n, 3, 5, 5, dtype=torch.float64)
    return x.abs() * sign


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the probe forwards the fast engine runs."""
    calls: list[int] = []
    real = fast_module.run_probe

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fast_module, "run_probe", counted)
    return calls


def _scores(engine: FastEngine, model: nn.Module, x: Tensor) -> tuple[Tensor, dict[str, str]]:
    params = select_parameters(model, None)
    sq, _, _ = engine.batch_statistics(model, x, params, [])
    return sq, {n: p.path for n, p in engine.paths.items()}


def _exact(model: nn.Module, x: Tensor) -> Tensor:
    g, _ = per_sample_grads(model, x)
    return g.pow(2).sum(1)


def test_same_signature_probes_once_and_stays_exact(probes: list[int]) -> None:
    model, engine = _model(), FastEngine()
    for seed in (1, 2, 3):
        x = _batch(-1.0, seed=seed)
        sq, paths = _scores(engine, model, x)
        assert all(p.startswith("fast") for p in paths.values())
        torch.testing.assert_close(sq, _exact(model, x), rtol=1e-10, atol=0)
    assert len(probes) == 1


def test_a_running_profiler_keeps_the_proof(probes: list[int]) -> None:
    """The engine's profiler ranges open outside the watched forward: profiling changes nothing the proof keys."""
    model, engine = _model(), FastEngine()
    _scores(engine, model, _batch(-1.0))
    x = _batch(-1.0, seed=2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        sq, _ = _scores(engine, model, x)
    assert len(probes) == 1
    torch.testing.assert_close(sq, _exact(model, x), rtol=1e-10, atol=0)


@pytest.mark.parametrize("change", ["batch size", "parameter in place", "module mode", "other model",
                                    "input dtype"])
def test_a_changed_model_or_signature_probes_again(probes: list[int], change: str) -> None:
    model, engine = _model(), FastEngine()
    _scores(engine, model, _batch(-1.0))
    x = _batch(-1.0, seed=2)
    if change == "batch size":
        x = x[:4]
    elif change == "parameter in place":
        with torch.no_grad():
            model.head.weight.mul_(1.5)
    elif change == "module mode":
        model.drop.train()  # dropout stays in eval in the engine's caller; the mode is part of the version
    elif change == "other model":
        model = _model(seed=5)
    elif change == "input dtype":
        model, x = model.float(), x.float()
    sq, paths = _scores(engine, model, x)
    assert len(probes) == 2
    if change != "module mode":
        assert all(p.startswith("fast") for p in paths.values())
        tol = 1e-4 if change == "input dtype" else 1e-10
        torch.testing.assert_close(sq, _exact(model, x).to(sq.dtype), rtol=tol, atol=0)


def test_a_branch_on_the_data_is_probed_on_the_batch_that_takes_it(probes: list[int]) -> None:
    model, engine = _model(), FastEngine()
    _, paths = _scores(engine, model, _batch(-1.0))
    assert all(p.startswith("fast") for p in paths.values())
    x = _batch(1.0, seed=2)  # positive sum: the mixing branch, a different forward
    sq, paths = _scores(engine, model, x)
    assert len(probes) == 2
    assert not any(p.startswith("fast") for n, p in paths.items() if n.startswith("head"))
    torch.testing.assert_close(sq, _exact(model, x), rtol=1e-10, atol=0)
    _, paths = _scores(engine, model, _batch(-1.0, seed=3))  # back on the proven signature: no new probe
    assert len(probes) == 2 and all(p.startswith("fast") for p in paths.values())


def test_another_parameter_selection_probes_again(probes: list[int]) -> None:
    """The evidence is kept per watched call, and the selection decides which calls are watched: the head alone,
    then every parameter, on the same batch shape, probes twice and is exact both times."""
    model, engine = _model(), FastEngine()
    x = _batch(-1.0)
    head = {n: p for n, p in model.named_parameters() if n.startswith("head")}
    sq_head, _, _ = engine.batch_statistics(model, x, head, [])
    torch.testing.assert_close(sq_head, per_sample_grads(model, x, list(head))[0].pow(2).sum(1), rtol=1e-10, atol=0)
    sq, paths = _scores(engine, model, x)
    assert len(probes) == 2 and all(p.startswith("fast") for p in paths.values())
    torch.testing.assert_close(sq, _exact(model, x), rtol=1e-10, atol=0)
