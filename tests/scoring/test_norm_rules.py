"""BatchNorm in eval mode on every map size (the folded framework kernel from 16 positions per channel, one
``vecdot`` below), against per-sample ``torch.autograd.grad`` of the layer (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_dynamical.scoring.layers import norm
from lightning_dynamical.scoring.layers.scratch import reusing
from tests.helpers.brute_force import layer_statistics

pytestmark = pytest.mark.usefixtures("one_thread")

#: (layer, input shape without the batch)
CASES = {
    "2d on 1x1": (lambda: nn.BatchNorm2d(6), (6, 1, 1)),
    "2d on 2x2": (lambda: nn.BatchNorm2d(6), (6, 2, 2)),
    "2d on 4x4": (lambda: nn.BatchNorm2d(5), (5, 4, 4)),
    "2d on 8x8": (lambda: nn.BatchNorm2d(3), (3, 8, 8)),
    "1d on features": (lambda: nn.BatchNorm1d(7), (7,)),
    "1d on sequences": (lambda: nn.BatchNorm1d(4), (4, 20)),
    "3d on 2x2x2": (lambda: nn.BatchNorm3d(3), (3, 2, 2, 2)),
}


def _layer(make) -> nn.Module:
    layer = make().double().eval()
    with torch.no_grad():
        layer.running_mean.normal_(3.0, 2.0)  # far from zero: centring matters
        layer.running_var.uniform_(0.2, 4.0)
        layer.weight.normal_()
        layer.bias.normal_()
    return layer


@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_norm_statistics(case: str) -> None:
    torch.manual_seed(0)
    make, shape = CASES[case]
    layer = _layer(make)
    rule = norm.BatchNormRule()
    with reusing():  # twice in one pool pass, the running variance changed in place in between
        for _ in range(2):
            a = torch.randn(5, *shape, dtype=torch.float64) * 2 + 3
            d = torch.randn_like(layer(a))
            v = {"weight": torch.randn_like(layer.weight), "bias": torch.randn_like(layer.bias)}
            sq, dots = rule.statistics(layer, a, d, {"weight", "bias"}, [v])
            ref_sq, ref_dots = layer_statistics(layer, a, d, v)
            torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(dots[:, 0], ref_dots, rtol=1e-10, atol=1e-12)
            weight_only, _ = rule.statistics(layer, a, d, {"weight"}, [])
            ref_weight, _ = layer_statistics(layer, a, d, {"weight": v["weight"]})
            torch.testing.assert_close(weight_only, ref_weight, rtol=1e-10, atol=1e-12)
            with torch.no_grad():
                layer.running_var.mul_(1.7)
                layer.running_mean.add_(0.5)


def test_both_forms_are_covered() -> None:
    """The cases above put maps on both sides of the threshold."""
    sizes = {torch.Size(shape[1:]).numel() for _, shape in CASES.values()}
    assert min(sizes) < norm.FOLDED_POSITIONS <= max(sizes)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_small_maps_accumulate_like_the_folded_kernel(dtype: torch.dtype,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A half-precision model (``precision="bf16-true"``) on small maps: both forms accumulate in float32, so they give
    the same per-sample gradients (in half precision the centring alone rounds away digits the folded kernel keeps)."""
    torch.manual_seed(0)
    layer = _layer(lambda: nn.BatchNorm2d(8)).float()
    with torch.no_grad():
        layer.running_mean.fill_(30.0)
    layer = layer.to(dtype)
    a = (torch.randn(4, 8, 2, 2) * 2 + 30).to(dtype)
    d = torch.randn(4, 8, 2, 2).to(dtype)
    rule = norm.BatchNormRule()
    small = rule.per_sample_gradients(layer, a, d, {"weight", "bias"})
    monkeypatch.setattr(norm, "FOLDED_POSITIONS", 0)
    folded = rule.per_sample_gradients(layer, a, d, {"weight", "bias"})
    for name in ("weight", "bias"):
        assert small[name].dtype == dtype
        torch.testing.assert_close(small[name].float(), folded[name].float(), rtol=0, atol=0)
