"""Convolutions on small feature maps drop the kernel taps that read only padding: every algorithm, on the cropped
convolution, against per-sample ``torch.autograd.grad`` of the layer (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_dynamical.scoring.layers import bind, conv, matmul
from tests.helpers.brute_force import layer_statistics

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")]

#: (layer, input shape without the batch): each has taps that meet only padding.
CASES = {
    "3x3 on 1x1": (lambda: nn.Conv2d(6, 5, 3, padding=1), (6, 1, 1)),
    "3x3 stride 2 on 2x2": (lambda: nn.Conv2d(4, 5, 3, stride=2, padding=1), (4, 2, 2)),
    "7x7 depthwise on 2x2": (lambda: nn.Conv2d(6, 6, 7, padding=3, groups=6), (6, 2, 2)),
    "5x5 grouped on 3x1": (lambda: nn.Conv2d(4, 6, 5, padding=2, groups=2), (4, 3, 1)),
    "dilated 3x3 on 2x3": (lambda: nn.Conv2d(3, 4, 3, padding=2, dilation=2), (3, 2, 3)),
    "same, even kernel on 1x2": (lambda: nn.Conv2d(3, 4, 4, padding="same"), (3, 1, 2)),
    "conv1d k5 on 2": (lambda: nn.Conv1d(3, 4, 5, padding=2), (3, 2)),
    "transposed 3x3 on 1x1": (lambda: nn.ConvTranspose2d(4, 3, 3, padding=1), (4, 1, 1)),
    "3x3 depthwise on 1x1": (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6), (6, 1, 1)),
    "3x3 grouped stride 2 on 2x2": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (4, 2, 2)),
}


def _check(layer: nn.Module, a: torch.Tensor, algorithm: str | None, cropped: bool) -> None:
    """The rule's statistics against autograd; ``cropped``: whether the taps meeting only padding are dropped."""
    d = torch.randn_like(layer(a))
    v = torch.randn_like(layer.weight)
    spec, rule = layer, conv.ConvRule(algorithm)
    if isinstance(layer, nn.ConvTranspose2d):
        spec, rule = bind(F.conv_transpose2d, (a, layer.weight, layer.bias, layer.stride, layer.padding,
                                               layer.output_padding, layer.groups, layer.dilation), {}).spec, \
            conv.ConvTransposeRule(algorithm)
    conv_spec, x, _ = rule.as_convolution(spec, a, d)
    assert (conv.ConvGeometry(conv_spec, x).live() is not None) == cropped
    sq, dots = rule.statistics(spec, a, d, {"weight"}, [{"weight": v}])
    ref_sq, ref_dots = layer_statistics(layer, a, d, {"weight": v})
    torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dots[:, 0], ref_dots, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("algorithm", [None, *sorted(conv.ALGORITHMS)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cropped_convolution_statistics(case: str, algorithm: str | None) -> None:
    torch.manual_seed(0)
    make, shape = CASES[case]
    layer = make().double()
    _check(layer, torch.randn(5, *shape, dtype=torch.float64), algorithm, cropped=True)


def test_full_maps_keep_every_tap() -> None:
    layer = nn.Conv2d(3, 4, 3, padding=1)
    assert conv.ConvGeometry(layer, torch.zeros(2, 3, 4, 4)).live() is None


DEPTHWISE = {
    "7x7": (lambda: nn.Conv2d(4, 4, 7, padding=3, groups=4), (4, 9, 8)),
    "3x3 stride 2, multiplier 2": (lambda: nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3), (3, 7, 6)),
    "3x3 dilation 2, stride 2 by 1": (lambda: nn.Conv2d(3, 3, 3, stride=(2, 1), padding=2, dilation=2, groups=3),
                                      (3, 8, 7)),
    "same, even kernel": (lambda: nn.Conv2d(2, 2, 4, padding="same", groups=2), (2, 6, 5)),
    "conv1d": (lambda: nn.Conv1d(3, 3, 5, padding=2, groups=3), (3, 11)),
}


#: Few input channels per group with large kernels or small maps: ``g_i`` from the forward convolution too, each
#: sample's channels a batch.
STEMS = {
    "7x7 stem, stride 2": (lambda: nn.Conv2d(3, 8, 7, stride=2, padding=3), (3, 16, 16)),
    "3x3 stem, stride 2, small map": (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1), (3, 17, 16)),
    "2 channels per group, dilated": (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), (4, 12, 11)),
}
FORWARD_KERNEL = {**DEPTHWISE, **STEMS}
#: 3x3 image stems and one-channel inputs: ``g_i`` from one copy of the columns (on a CPU 1.1-2x faster than the
#: forward and the grouped kernel there).
COLUMN_STEMS = {
    "3x3 stem": (lambda: nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16)),
    "one-channel input": (lambda: nn.Conv2d(1, 16, 3, padding=1), (1, 16, 16)),
}
PICKED = {**dict.fromkeys(FORWARD_KERNEL, "direct_forward"), **dict.fromkeys(COLUMN_STEMS, "direct_columns")}


@pytest.mark.parametrize("algorithm", [None, *sorted(conv.ALGORITHMS)])
@pytest.mark.parametrize("case", sorted(PICKED))
def test_few_channel_statistics(case: str, algorithm: str | None) -> None:
    """Depthwise layers, stems and one-channel inputs: the cost model's pick, and every algorithm exact."""
    torch.manual_seed(0)
    make, shape = {**FORWARD_KERNEL, **COLUMN_STEMS}[case]
    layer = make().double()
    a = torch.randn(5, *shape, dtype=torch.float64)
    costs = conv.estimates(conv.ConvGeometry(layer, a), 1)
    assert min(costs, key=costs.__getitem__) == PICKED[case]
    _check(layer, a, algorithm, cropped=False)


@pytest.mark.parametrize("algorithm", ["direct_grouped", "direct_columns"])
@pytest.mark.parametrize("case", ["3x3", "strided grouped", "conv1d"])
def test_direct_forms_in_sample_chunks(monkeypatch: pytest.MonkeyPatch, case: str, algorithm: str) -> None:
    """Large layers run the grouped weight-gradient kernel, and form ``g_i`` from columns, a few samples at a time
    (here every layer, 2 at a time, on 5 samples: the last chunk is short)."""
    monkeypatch.setattr(conv, "GROUPED_LIMIT", 0)
    monkeypatch.setattr(conv, "GROUPED_CHUNK", 2)
    monkeypatch.setattr(matmul, "DIRECT_LIMIT", 0)
    monkeypatch.setattr(matmul, "DIRECT_CHUNK", 2 * 4 * 3 * 9)
    torch.manual_seed(0)
    layer, shape = {"3x3": (nn.Conv2d(3, 4, 3, padding=1), (3, 6, 5)),
                    "strided grouped": (nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (4, 7, 6)),
                    "conv1d": (nn.Conv1d(3, 4, 3, padding=1), (3, 9))}[case]
    _check(layer.double(), torch.randn(5, *shape, dtype=torch.float64), algorithm, cropped=False)
