"""Every scoring engine against the brute-force reference, on tiny models covering each layer rule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import DynamicAL
from lightning_dynamical.scoring import (
    FastEngine,
    NotLastLayerError,
    ScoringError,
    evaluation,
    make_engine,
    select_parameters,
    summed_gradient,
)
from lightning_dynamical.scoring.layers import RULES, conv, matmul
from tests.helpers.brute_force import dynamical_scores, labeled_grad, per_sample_grads
from tests.helpers.models import trained_like

N_POOL, N_LAB = 7, 5

pytestmark = [pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


class CNN(nn.Module):
    """Conv-BN-ReLU-pool, strided conv-BN-ReLU, dropout, pooling, head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.fc(self.drop(h.mean((2, 3))))


class ResBlock(nn.Module):
    """A ResNet basic block with a strided 1x1 shortcut, in-place ReLU and in-place skip addition."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.down = nn.Sequential(nn.Conv2d(3, 4, 1, 2, bias=False), nn.BatchNorm2d(4))
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.down(x)
        return self.fc(self.relu(out).mean((2, 3)))


class Conv1dNet(nn.Module):
    """Conv1d with stride, dilation and groups; ``"same"`` padding with an even kernel; ``"valid"``."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, stride=2, dilation=2, groups=2, padding=2)
        self.c2 = nn.Conv1d(6, 6, 4, padding="same", groups=3)
        self.c3 = nn.Conv1d(6, 4, 3, dilation=2, padding="valid")
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.c3(torch.tanh(self.c2(torch.tanh(self.c1(x))))))
        return self.fc(h.mean(2))


class MLP(nn.Module):
    """Linear on (B, T, F) tokens, LayerNorm, dropout, then 2-D Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(0.3)
        self.hidden = nn.Linear(8, 8)
        self.norm2 = nn.LayerNorm(8, bias=False)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.norm(self.embed(x)))).mean(1)
        return self.fc(torch.tanh(self.norm2(self.hidden(h))))


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.gn(self.conv(x))).mean((2, 3)))


class EmbeddingNet(nn.Module):
    """Embedding with a padding index and repeated indices."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 5, padding_idx=0)
        self.fc = nn.Linear(5, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.emb(idx)).mean(1))


class Tied(nn.Module):
    """An output layer tied to the embedding, and a Linear used twice: both fall back to torch.func."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.mix = nn.Linear(4, 4)
        self.out = nn.Linear(4, 7)
        self.out.weight = self.emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx).mean(1)
        return self.out(torch.tanh(self.mix(torch.tanh(self.mix(h)))))


class Scale(nn.Module):
    """A custom layer with its own parameter used in ``forward``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class DoubledLinear(nn.Linear):
    """A Linear subclass overriding ``forward``: must not be treated as a plain Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, 2 * self.weight, self.bias)


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.lin = DoubledLinear(4, 5)
        self.scale = Scale(5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(torch.tanh(self.scale(self.lin(h))))


class Odd(nn.Module):
    """A layer whose output is unused, and one called under ``torch.no_grad`` (zero gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.unused = nn.Linear(6, 5)
        self.no_grad = nn.Linear(6, 5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unused(x)
        with torch.no_grad():
            c = self.no_grad(x)
        return self.fc(torch.tanh(self.a(x)) + c)


def _frozen() -> nn.Module:
    model = CNN()
    model.conv.weight.requires_grad_(False)
    model.bn2.requires_grad_(False)
    return model


def _images(n: int, size: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, size, size)


def _tokens(n: int) -> torch.Tensor:
    return torch.randint(0, 7, (n, 6))


MODELS = {
    "cnn": (CNN, _images),
    "resnet_block": (ResBlock, _images),
    "conv1d": (Conv1dNet, lambda n: torch.randn(n, 4, 13)),
    "mlp": (MLP, lambda n: torch.randn(n, 5, 6)),
    "groupnorm": (GroupNormNet, _images),
    "embedding": (EmbeddingNet, _tokens),
    "tied": (Tied, _tokens),
    "frozen": (_frozen, _images),
    "custom": (Custom, _images),
    "odd": (Odd, lambda n: torch.randn(n, 6)),
}


def _problem(name: str, dtype: torch.dtype = torch.float64, seed: int = 0):
    torch.manual_seed(seed)
    factory, inputs = MODELS[name]
    model = trained_like(factory(), inputs(16)).to(dtype)
    with torch.no_grad():  # break symmetries of default inits (e.g. LayerNorm weight 1, bias 0)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    pool_x, lab_x = (_as(inputs(n), dtype) for n in (N_POOL, N_LAB))
    with torch.no_grad():
        lab_y = torch.randint(0, model.eval()(lab_x).shape[1], (N_LAB,))
    model.train()
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(N_POOL, dtype=torch.long)), batch_size=3)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=2)
    return model, pool, labeled, pool_x, lab_x, lab_y


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype) if x.is_floating_point() else x


def _check(scores: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    assert scores.shape == ref.shape
    err = (scores.double() - ref.double()).abs().max()
    assert err <= tol * ref.abs().max(), f"max error {err:.3e} vs max |score| {ref.abs().max():.3e}"


def _reference(model: nn.Module, pool_x, lab_x, lab_y, params) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force ``(||g_u||^2, g_u . G_S)`` in eval mode (one autograd call per sample)."""
    dtype = next(model.parameters()).dtype
    names = list(select_parameters(model, params))
    with evaluation(model):
        g, _ = per_sample_grads(model, _as(pool_x, dtype), names)
        g_s = labeled_grad(model, _as(lab_x, dtype), lab_y, names)
    return g.pow(2).sum(1).detach(), (g @ g_s).detach()


def _score_and_check(model, pool, labeled, pool_x, lab_x, lab_y, gammas, params, engine, tol, ref_model=None):
    """Score with each gamma and compare with the brute force; the model must come back untouched."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    sq, dots = _reference(ref_model or model, pool_x, lab_x, lab_y, params)
    for gamma in gammas:
        scores = DynamicAL(gamma=gamma, params=params, engine=engine, chunk_size=2).score(model, pool, labeled)
        _check(scores, sq if gamma == 0 else dots if math.isinf(gamma) else sq + gamma * dots, tol)
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


GAMMAS = (0.0, 2.0, math.inf)


def test_reference_matches_the_shared_brute_force():
    model, _, _, pool_x, lab_x, lab_y = _problem("cnn")
    sq, dots = _reference(model, pool_x, lab_x, lab_y, None)
    torch.testing.assert_close(sq + 2 * dots, dynamical_scores(model, pool_x, lab_x, lab_y, 2.0))


@pytest.mark.parametrize("engine", ["func", "fast", "auto"])
@pytest.mark.parametrize("name", list(MODELS))
def test_engines_match_brute_force_float64(name, engine):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(name)
    _score_and_check(model, pool, labeled, pool_x, lab_x, lab_y, GAMMAS, None, engine, 1e-8)


@pytest.mark.parametrize("name", list(MODELS))
def test_engines_match_brute_force_float32(name):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(name, torch.float32, seed=1)
    reference = _problem(name, torch.float64, seed=1)[0]
    reference.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    _score_and_check(model, pool, labeled, pool_x, lab_x, lab_y, (2.0,), None, "auto", 1e-3, ref_model=reference)


SUBSETS = {
    "cnn": ["conv.weight", "bn2.bias", "fc.weight"],
    "resnet_block": ["down.0.weight", "bn1.weight", "conv2.weight"],
    "mlp": ["embed.weight", "norm.bias", "norm2.weight"],
    "embedding": ["emb.weight"],
    "tied": ["mix.bias", "fc.weight"],
    "custom": ["scale.scale", "lin.bias", "fc.bias"],
}


@pytest.mark.parametrize("engine", ["func", "fast", "auto"])
@pytest.mark.parametrize("name", ["cnn", "resnet_block", "mlp", "embedding", "custom"])
def test_parameter_subsets(name, engine):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(name, seed=2)
    params = [n for n in SUBSETS[name] if n in dict(model.named_parameters())]
    _score_and_check(model, pool, labeled, pool_x, lab_x, lab_y, (2.0,), params, engine, 1e-8)


@pytest.mark.parametrize("engine", ["func", "fast", "auto", "last_layer"])
@pytest.mark.parametrize("name", ["cnn", "mlp", "tied"])
def test_last_layer(name, engine):
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(name, seed=3)
    _score_and_check(model, pool, labeled, pool_x, lab_x, lab_y, GAMMAS, "last_layer", engine, 1e-8)


@pytest.mark.parametrize("engine", ["fast", "last_layer"])
def test_a_batch_of_equal_samples_scores_exactly(engine):
    """Equal samples cannot show the probe anything: the fast engine takes the exact path for them, the last-layer
    engine (whose head rows are the logits' rows) still scores them."""
    model, _, labeled, pool_x, lab_x, lab_y = _problem("cnn", seed=4)
    pool_x = torch.cat([pool_x[:1].expand(3, *pool_x.shape[1:]), pool_x[1:4]])
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(len(pool_x), dtype=torch.long)), batch_size=3)
    _score_and_check(model, pool, labeled, pool_x, lab_x, lab_y, GAMMAS, "last_layer" if engine == "last_layer"
                     else None, engine, 1e-8)


def test_last_layer_engine_rejects_other_parameters():
    model, pool, labeled, *_ = _problem("cnn")
    with pytest.raises(NotLastLayerError, match=r"also has \['conv.weight"):
        DynamicAL(params=None, engine="last_layer").score(model, pool, labeled)
    with pytest.raises(NotLastLayerError, match="conv.weight"):
        DynamicAL(params=["fc.weight", "conv.weight"], engine="last_layer").score(model, pool, labeled)


def test_tied_head_weight_is_not_a_last_layer_parameter():
    model, pool, labeled, pool_x, lab_x, lab_y = _problem("tied")
    with pytest.raises(NotLastLayerError, match="used 2 times"):
        DynamicAL(params=["emb.weight"], engine="last_layer").score(model, pool, labeled)
    _score_and_check(model, pool, labeled, pool_x, lab_x, lab_y, (2.0,), ["emb.weight"], "auto", 1e-8)


def test_auto_uses_the_closed_form_for_the_head(monkeypatch):
    model, pool, labeled, *_ = _problem("cnn")

    def forbidden(*args, **kwargs):
        raise AssertionError("the fast engine should not run for params='last_layer'")

    monkeypatch.setattr(FastEngine, "batch_statistics", forbidden)
    DynamicAL(params="last_layer", engine="auto").score(model, pool, labeled)
    DynamicAL(params=["fc.bias"], engine="auto").score(model, pool, labeled)


@pytest.mark.parametrize(("name", "expected"), [
    ("custom", {"lin.weight"}),  # reflect-padded conv, the broadcast scale and the subclass's bias are covered
    ("tied", {"emb.weight", "mix.weight", "mix.bias"}),
    ("odd", {"no_grad.weight", "no_grad.bias"}),
    ("cnn", set()),
    ("resnet_block", set()),
])
def test_fallback_covers_exactly_the_unproven_parameters(name, expected):
    model, pool, *_ = _problem(name)
    paths = DynamicAL(engine="fast").explain(model, next(iter(pool)))
    assert [p.name for p in paths] == [n for n, p in model.named_parameters() if p.requires_grad]
    assert {p.name for p in paths if p.path == "vmap"} == expected
    assert all(p.path.startswith(("fast (", "unused")) for p in paths if p.name not in expected)
    assert all(p.reason for p in paths if p.name in expected)


@pytest.mark.parametrize("algorithm", sorted(conv.ALGORITHMS))
@pytest.mark.parametrize("name", ["cnn", "resnet_block", "conv1d", "groupnorm"])
def test_every_convolution_algorithm(monkeypatch, name, algorithm):
    monkeypatch.setitem(RULES, "conv", conv.ConvRule(algorithm))
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(name, seed=4)
    _score_and_check(model, pool, labeled, pool_x, lab_x, lab_y, (2.0,), None, "fast", 1e-8)


@pytest.mark.parametrize("ghost", [True, False])
def test_linear_direct_and_ghost_forms(monkeypatch, ghost):
    monkeypatch.setattr(matmul, "prefer_ghost", lambda *args: ghost)
    model, pool, labeled, pool_x, lab_x, lab_y = _problem("mlp", seed=5)
    _score_and_check(model, pool, labeled, pool_x, lab_x, lab_y, (2.0,), None, "fast", 1e-8)


def test_batch_statistics_models_go_to_the_exact_path():
    model, _, _, pool_x, *_ = _problem("resnet_block", seed=6)
    model.train()  # BatchNorm normalises with batch statistics: samples are not independent
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = FastEngine()
    params = select_parameters(model, None)
    sq, _, _ = engine.batch_statistics(model, pool_x, params, [])
    g, _ = per_sample_grads(copy.deepcopy(model), pool_x)  # each sample alone, as the exact path scores it
    torch.testing.assert_close(sq, g.pow(2).sum(1), rtol=1e-8, atol=0)
    assert {p.path for p in engine.paths.values()} == {"loop"}
    assert all("batch statistics" in p.reason for p in engine.paths.values())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_chunking_does_not_change_results():
    model, pool, labeled, pool_x, *_ = _problem("cnn", seed=7)
    with evaluation(model):
        params = select_parameters(model, None)
        g_s = summed_gradient(model, labeled, params)
        one = FastEngine(chunk_size=None).pool_statistics(model, [pool_x], params, [g_s, g_s])
        many = FastEngine(chunk_size=2).pool_statistics(model, pool, params, [g_s, g_s])
    torch.testing.assert_close(one.sqnorm, many.sqnorm)
    torch.testing.assert_close(one.dots, many.dots)
    torch.testing.assert_close(one.dots[:, 0], one.dots[:, 1])


@pytest.mark.parametrize("name", ["fast", "func", "last_layer"])
def test_empty_batches_are_skipped(name):
    """A pool loader may yield an empty batch (a custom sampler); it adds nothing and breaks nothing."""
    model, _, _, pool_x, *_ = _problem("cnn", seed=3)
    with evaluation(model):
        engine = make_engine(name, 32)
        params = select_parameters(model, "last_layer" if name == "last_layer" else None)
        direction = [{n: torch.randn_like(p) for n, p in params.items()}]
        plain = engine.pool_statistics(model, [pool_x[:3], pool_x[3:]], params, direction)
        gaps = engine.pool_statistics(model, [pool_x[:0], pool_x[:3], pool_x[:0], pool_x[3:]], params, direction)
    torch.testing.assert_close(gaps.sqnorm, plain.sqnorm, rtol=0, atol=0)
    torch.testing.assert_close(gaps.dots, plain.dots, rtol=0, atol=0)
    assert torch.equal(gaps.pseudo_labels, plain.pseudo_labels)


def test_make_engine_names():
    for name in ("auto", "fast", "func", "last_layer"):
        assert make_engine(name).name == name
    with pytest.raises(ValueError, match="Unknown engine"):
        make_engine("backpack")


class Checkpointed(nn.Module):
    """A dense block under ``torch.utils.checkpoint`` in the forward (both implementations), after a layer whose output
    requires grad (reentrant checkpointing differentiates only through inputs that do)."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.inp = nn.Linear(4, 4)
        self.lin = nn.Linear(4, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.utils.checkpoint.checkpoint(lambda t: torch.tanh(self.lin(t)), self.inp(x),
                                              use_reentrant=self.reentrant)
        return self.fc(h)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_reentrant_checkpointing_is_refused_with_what_to_change_and_non_reentrant_scores_exactly(gamma):
    torch.manual_seed(0)
    x, lab_x, lab_y = torch.randn(6, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), \
        torch.tensor([0, 1, 2])
    pool = DataLoader(TensorDataset(x, torch.zeros(6, dtype=torch.long)), batch_size=4)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=2)
    model = Checkpointed(reentrant=True).double()
    with pytest.raises(ScoringError, match="use_reentrant=False"):
        DynamicAL(gamma=gamma).score(model, pool, labeled)
    model.reentrant = False
    ref = dynamical_scores(model, x, lab_x, lab_y, gamma)
    assert torch.allclose(DynamicAL(gamma=gamma).score(model, pool, labeled), ref, rtol=1e-10, atol=0)


class EvalCache(nn.Module):
    """Keeps a tensor made from a parameter on its first eval forward, graph included (as timm's LeViT keeps its
    attention biases)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.table = nn.Parameter(torch.randn(3))
        self.cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.lin(x) + self.table * 2
        if self.cache is None:
            self.cache = self.table * 2
        return self.lin(x) + self.cache


def test_a_graph_kept_across_forwards_is_refused_with_what_to_change():
    torch.manual_seed(0)
    pool = DataLoader(TensorDataset(torch.randn(6, 4), torch.zeros(6, dtype=torch.long)), batch_size=2)
    labeled = DataLoader(TensorDataset(torch.randn(3, 4), torch.tensor([0, 1, 2])), batch_size=2)
    with pytest.raises(ScoringError, match="earlier forward"):  # G_S's second labeled batch meets the freed graph
        DynamicAL(gamma=2.0).score(EvalCache(), pool, labeled)
