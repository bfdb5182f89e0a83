"""Segmentation: every engine scores exactly, and ``summed_gradient`` gives G_S exactly, against a brute-force
per-sample ``torch.autograd.grad`` loop written here from scratch (per-pixel cross-entropy by hand, averaged over
each sample's labeled pixels, pseudo targets the per-pixel argmax), in float64, on small U-Nets with BatchNorm and
Dropout2d scored in eval mode: one with an Upsample + Conv2d decoder, one with a ConvTranspose2d decoder."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import DynamicAL
from lightning_dynamical.scoring import NotLastLayerError, evaluation, select_parameters, summed_gradient
from lightning_dynamical.scoring.exact import loop_gradients, vmap_gradients
from lightning_dynamical.scoring.layers import OPS, RULES, conv
from lightning_dynamical.tasks import Segmentation
from tests.helpers.brute_force import assert_close_scores, scores_of
from tests.helpers.models import trained_like

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES, IGNORE = 3, 255
H, W = 8, 12  # non-square
N_POOL, N_LAB = 7, 5
TASK = Segmentation(ignore_index=IGNORE)


def _block(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())


class UNet(nn.Module):
    """Conv-BN-ReLU encoder, max-pool, Conv-BN-ReLU bottleneck with Dropout2d, an upsampling decoder (``nn.Upsample``
    + Conv2d, or ``nn.ConvTranspose2d``), skip concatenation, Conv-BN-ReLU, 1x1 conv head."""

    def __init__(self, decoder: str) -> None:
        super().__init__()
        self.enc = _block(2, 4)
        self.pool = nn.MaxPool2d(2)
        self.mid = _block(4, 6)
        self.drop = nn.Dropout2d(0.3)
        self.up: nn.Module = (nn.ConvTranspose2d(6, 4, 2, stride=2) if decoder == "transpose"
                              else nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(6, 4, 3, padding=1)))
        self.dec = _block(8, 4)
        self.head = nn.Conv2d(4, CLASSES, 1)

    def forward(self, x: Tensor) -> Tensor:
        e = self.enc(x)
        m = self.drop(self.mid(self.pool(e)))
        return self.head(self.dec(torch.cat([self.up(m), e], 1)))


def _ce(logits: Tensor, targets: Tensor) -> Tensor:
    """One sample's loss, by hand: the mean over its labeled pixels of ``-log softmax`` at the target (0 if none)."""
    logp = torch.log_softmax(logits, 1)
    valid = targets != IGNORE
    picked = logp.gather(1, targets.where(valid, 0).unsqueeze(1)).squeeze(1)
    return -(picked * valid).sum() / valid.sum().clamp_min(1)


def _flat_grad(model: nn.Module, loss: Tensor, names: list[str]) -> Tensor:
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(params[n])).reshape(-1) for n, g in zip(names, grads)])


def brute_force(model: nn.Module, pool_x: Tensor, lab_x: Tensor, lab_y: Tensor,
                names: list[str] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(g (N, P), G_S (P,), pseudo targets (N, *spatial))``: one forward and one ``autograd.grad`` per sample, the
    model in eval mode (restored)."""
    names = names or [n for n, p in model.named_parameters() if p.requires_grad]
    with evaluation(model):
        rows, pseudo = [], []
        for i in range(pool_x.shape[0]):
            logits = model(pool_x[i: i + 1])
            y = logits.argmax(1).detach()
            rows.append(_flat_grad(model, _ce(logits, y), names))
            pseudo.append(y[0])
        g_s = sum(_flat_grad(model, _ce(model(lab_x[i: i + 1]), lab_y[i: i + 1]), names)
                  for i in range(lab_x.shape[0]))
    return torch.stack(rows).detach(), g_s.detach(), torch.stack(pseudo)


def _targets(n: int, shape: tuple[int, ...], seed: int) -> Tensor:
    """Random classes with about a third of the pixels ignored, and sample 1 ignored entirely."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n, *shape), generator=gen)
    y[torch.rand(y.shape, generator=gen) < 0.3] = IGNORE
    y[1] = IGNORE
    return y


def _problem(model: nn.Module, size: tuple[int, ...], seed: int = 0):
    torch.manual_seed(seed)
    model = trained_like(model, torch.randn(16, 2, *size)).double()
    with torch.no_grad():  # break the symmetries of default inits (BatchNorm weight 1, bias 0)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.train()
    pool_x = torch.randn(N_POOL, 2, *size, dtype=torch.float64)
    lab_x = torch.randn(N_LAB, 2, *size, dtype=torch.float64)
    with torch.no_grad(), evaluation(model):
        out_size = tuple(model(lab_x[:1]).shape[2:])
    lab_y = _targets(N_LAB, out_size, seed)
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(N_POOL, *out_size, dtype=torch.long)), batch_size=3)
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=2)
    return model, pool, labeled, pool_x, lab_x, lab_y


def _unet(decoder: str, seed: int = 0):
    return _problem(UNet(decoder), (H, W), seed)


def test_reference_loss_is_the_tasks():
    """The hand-written loss of the reference is the task's per-sample loss (summed over a batch by the task)."""
    torch.manual_seed(0)
    logits = torch.randn(4, CLASSES, H, W, dtype=torch.float64)
    y = _targets(4, (H, W), 0)
    expected = sum(_ce(logits[i: i + 1], y[i: i + 1]) for i in range(4))
    torch.testing.assert_close(TASK.loss(logits, y), expected, rtol=1e-12, atol=1e-12)
    assert float(TASK.loss(logits[1:2], y[1:2])) == 0.0


@pytest.mark.parametrize("decoder", ["upsample", "transpose"])
def test_summed_gradient_matches_brute_force(decoder):
    model, _, labeled, pool_x, lab_x, lab_y = _unet(decoder)
    _, g_s, _ = brute_force(model, pool_x[:1], lab_x, lab_y)
    with evaluation(model):
        params = select_parameters(model, None)
        total = summed_gradient(model, labeled, params, task=TASK)
        ignored = summed_gradient(model, [(lab_x[1:2], lab_y[1:2])], params, task=TASK)
    assert_close_scores(torch.cat([total[n].reshape(-1) for n in params]), g_s, 1e-12)
    assert all(not g.any() for g in ignored.values())  # a fully ignored sample adds nothing
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("engine", ["fast", "func", "auto"])
@pytest.mark.parametrize("decoder", ["upsample", "transpose"])
def test_dynamical_segmentation_matches_brute_force_float64(decoder, engine, gamma):
    model, pool, labeled, pool_x, lab_x, lab_y = _unet(decoder)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    chosen = DynamicAL(gamma=gamma, engine=engine, chunk_size=2, task=TASK).select(model, pool, labeled, 3)
    g, g_s, pseudo = brute_force(model, pool_x, lab_x, lab_y)
    assert chosen.pool_scores is not None
    assert_close_scores(chosen.pool_scores, scores_of(g, g_s, gamma))
    assert chosen.pseudo_labels is not None and torch.equal(chosen.pseudo_labels, pseudo[chosen.positions])
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("params", [["up.weight", "dec.1.bias", "enc.0.weight"], ["head.weight", "head.bias"]])
@pytest.mark.parametrize("engine", ["fast", "auto"])
def test_parameter_subsets(engine, params):
    model, pool, labeled, pool_x, lab_x, lab_y = _unet("transpose", seed=1)
    scores = DynamicAL(gamma=2.0, params=params, engine=engine, chunk_size=2, task=TASK).score(model, pool, labeled)
    g, g_s, _ = brute_force(model, pool_x, lab_x, lab_y, params)
    assert_close_scores(scores, scores_of(g, g_s, 2.0))


@pytest.mark.parametrize("decoder", ["upsample", "transpose"])
def test_exact_paths_match_brute_force_gradients(decoder):
    """The exact fallback's ``vmap`` and per-sample loop give every sample's whole gradient."""
    model, _, _, pool_x, lab_x, lab_y = _unet(decoder, seed=2)
    g, _, pseudo = brute_force(model, pool_x, lab_x, lab_y)
    with evaluation(model):
        params = select_parameters(model, None)
        for grads in (vmap_gradients(model, pool_x, pseudo, params, 3, TASK),
                      loop_gradients(model, pool_x, pseudo, params, TASK)):
            flat = torch.cat([grads[n].reshape(N_POOL, -1) for n in params], 1)
            torch.testing.assert_close(flat, g, rtol=1e-9, atol=1e-12 * g.abs().max())


@pytest.mark.parametrize("decoder", ["upsample", "transpose"])
def test_fast_path_covers_every_parameter(decoder, recwarn):
    model, pool, *_ = _unet(decoder)
    paths = DynamicAL(engine="fast", task=TASK).explain(model, next(iter(pool)))
    assert [p.name for p in paths] == [n for n, _ in model.named_parameters()]
    assert all(p.path.startswith("fast (") and not p.reason for p in paths), paths
    if decoder == "transpose":
        assert {p.name: p.path for p in paths}["up.weight"] == "fast (conv_transpose2d)"
    assert not [w for w in recwarn if "slow exact path" in str(w.message)]


@pytest.mark.filterwarnings("ignore:fast engine. 2 of 16:UserWarning")
def test_conv_transpose_without_its_rule_falls_back_with_the_reason(monkeypatch):
    """An op without a rule is scored exactly on the exact path, and ``explain`` says why."""
    monkeypatch.delitem(OPS, torch.conv_transpose2d)
    model, pool, labeled, pool_x, lab_x, lab_y = _unet("transpose", seed=3)
    with pytest.warns(UserWarning, match="2 of 16 selected parameters are scored on a slow exact path"):
        paths = {p.name: p for p in DynamicAL(engine="fast", task=TASK).explain(model, next(iter(pool)))}
    for name in ("up.weight", "up.bias"):
        assert paths[name].path == "vmap"
        assert paths[name].reason == "used by torch.conv_transpose2d, which has no closed form"
    scores = DynamicAL(gamma=2.0, engine="fast", chunk_size=2, task=TASK).score(model, pool, labeled)
    g, g_s, _ = brute_force(model, pool_x, lab_x, lab_y)
    assert_close_scores(scores, scores_of(g, g_s, 2.0))


def test_last_layer_refuses_a_convolution_head():
    model, pool, labeled, *_ = _unet("upsample")
    head = r"needs logits that are the output of one linear layer \(F.linear\); this model's are not"
    with pytest.raises(NotLastLayerError, match=head):
        DynamicAL(engine="last_layer", task=TASK).score(model, pool, labeled)
    with pytest.raises(NotLastLayerError, match=head):
        DynamicAL(params=["head.weight", "head.bias"], engine="last_layer", task=TASK).score(model, pool, labeled)
    with pytest.raises(ValueError, match="needs an nn.Linear classifier head"):
        DynamicAL(params="last_layer", task=TASK).score(model, pool, labeled)


class TransposeNet(nn.Module):
    """Conv-BN-ReLU, one transposed convolution of a given configuration, tanh, 1x1 conv head (1-D or 2-D)."""

    def __init__(self, dims: int, **config: int) -> None:
        super().__init__()
        conv_cls, bn_cls, up_cls = ((nn.Conv1d, nn.BatchNorm1d, nn.ConvTranspose1d) if dims == 1
                                    else (nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d))
        self.conv = conv_cls(2, 4, 3, padding=1)
        self.bn = bn_cls(4)
        self.up = up_cls(4, 6, 3, **config)
        self.head = conv_cls(6, CLASSES, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.up(torch.relu(self.bn(self.conv(x))))))


TRANSPOSE_CONFIGS = {
    "stride2_output_padding": (2, {"stride": 2, "padding": 1, "output_padding": 1}),
    "groups_dilation_no_bias": (2, {"padding": 2, "dilation": 2, "groups": 2, "bias": False}),
    "output_padding_over_stride": (2, {"dilation": 2, "output_padding": 1}),  # conv(d, W) longer than x
    "strided_1d": (1, {"stride": 3, "padding": 1, "output_padding": 2, "groups": 2}),
}


@pytest.mark.parametrize("algorithm", [None, *sorted(conv.ALGORITHMS)])
@pytest.mark.parametrize("config", list(TRANSPOSE_CONFIGS))
def test_conv_transpose_rule(monkeypatch, config, algorithm):
    """The transposed-convolution rule in every configuration, with each convolution algorithm."""
    monkeypatch.setitem(RULES, "conv_transpose", conv.ConvTransposeRule(algorithm))
    dims, kwargs = TRANSPOSE_CONFIGS[config]
    model, pool, labeled, pool_x, lab_x, lab_y = _problem(TransposeNet(dims, **kwargs), (5, 7)[-dims:], seed=4)
    paths = {p.name: p.path for p in DynamicAL(engine="fast", task=TASK).explain(model, next(iter(pool)))}
    assert paths["up.weight"] == f"fast (conv_transpose{dims}d)", paths
    scores = DynamicAL(gamma=2.0, engine="fast", chunk_size=2, task=TASK).score(model, pool, labeled)
    g, g_s, _ = brute_force(model, pool_x, lab_x, lab_y)
    assert_close_scores(scores, scores_of(g, g_s, 2.0))
