"""Channels-last inputs and output gradients (timm's ConvNeXt permutes NHWC activations back to NCHW views): every
convolution algorithm against per-sample ``torch.autograd.grad`` (float64), and the copies they avoid."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_dynamical.scoring.layers import base, conv
from lightning_dynamical.scoring.layers.base import row_dots
from tests.helpers.brute_force import layer_statistics

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {
    "1x1": (lambda: nn.Conv2d(6, 5, 1), (6, 4, 3)),
    "1x1 grouped": (lambda: nn.Conv2d(6, 4, 1, groups=2), (6, 3, 3)),
    "3x3 padded": (lambda: nn.Conv2d(4, 5, 3, padding=1), (4, 5, 4)),
    "7x7 depthwise": (lambda: nn.Conv2d(4, 4, 7, padding=3, groups=4), (4, 5, 5)),
    "2x2 stride 2": (lambda: nn.Conv2d(4, 6, 2, stride=2), (4, 6, 4)),
}


def _nhwc_view(shape: tuple[int, ...]) -> torch.Tensor:
    """A ``(B, C, H, W)`` tensor whose memory is NHWC, as ``x.permute(0, 3, 1, 2)`` of an NHWC activation."""
    b, c, h, w = shape
    return torch.randn(b, h, w, c, dtype=torch.float64).permute(0, 3, 1, 2)


@pytest.mark.parametrize("algorithm", [None, *sorted(conv.ALGORITHMS)])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("layout", ["input", "gradient", "both"])
def test_channels_last_statistics(case: str, algorithm: str | None, layout: str) -> None:
    torch.manual_seed(0)
    make, shape = CASES[case]
    layer = make().double()
    a = _nhwc_view((3, *shape)) if layout != "gradient" else torch.randn(3, *shape, dtype=torch.float64)
    out_shape = layer(a).shape
    d = _nhwc_view(tuple(out_shape)) if layout != "input" else torch.randn(out_shape, dtype=torch.float64)
    v = torch.randn_like(layer.weight)
    sq, dots = conv.ConvRule(algorithm).statistics(layer, a, d, {"weight"}, [{"weight": v}])
    ref_sq, ref_dots = layer_statistics(layer, a, d, {"weight": v})
    torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dots[:, 0], ref_dots, rtol=1e-10, atol=1e-12)


def test_channels_last_positions_are_views() -> None:
    """A 1x1 layer's columns and a channels-last output gradient's positions share the tensors' memory."""
    a = _nhwc_view((2, 6, 4, 3))
    geo = conv.ConvGeometry(nn.Conv2d(6, 4, 1, groups=2), a)
    cols = geo.columns()
    assert cols.shape == (2, 2, 12, 3) and cols.data_ptr() == a.data_ptr()
    torch.testing.assert_close(cols, a.reshape(2, 2, 3, 12).transpose(-1, -2), rtol=0, atol=0)
    d = _nhwc_view((2, 4, 4, 3))
    dpos = geo.output_positions(d)
    assert dpos.data_ptr() == d.data_ptr()
    torch.testing.assert_close(dpos, d.reshape(2, 2, 2, 12).transpose(-1, -2), rtol=0, atol=0)
    u, w = base.flat_pair(d, d.contiguous())
    assert u.data_ptr() == d.data_ptr()
    torch.testing.assert_close(torch.linalg.vecdot(u, w), d.pow(2).sum((1, 2, 3)), rtol=1e-12, atol=0)
    torch.testing.assert_close(row_dots(d, d.contiguous()), d.pow(2).sum((1, 2, 3)), rtol=1e-12, atol=0)


#: Columns read in place from inputs of every layout the engine meets: padded or not, dilated, strided, a slice at a
#: nonzero storage offset, a batch expanded with stride 0, a transposed 1-D input.
COLUMN_INPUTS = {
    "padded, dilated, strided": (lambda: nn.Conv2d(4, 6, 3, stride=(2, 1), padding=(2, 1), dilation=2),
                                 lambda: torch.randn(3, 4, 9, 8)),
    "unpadded, dilated": (lambda: nn.Conv2d(4, 6, 3, dilation=2), lambda: torch.randn(3, 4, 9, 8)),
    "unpadded, channels-last": (lambda: nn.Conv2d(4, 6, 2, stride=2),
                                lambda: torch.randn(3, 4, 8, 8).to(memory_format=torch.channels_last)),
    "1x1, stride 2, padded": (lambda: nn.Conv2d(4, 6, 1, stride=2, padding=1), lambda: torch.randn(3, 4, 7, 8)),
    "slice at an offset": (lambda: nn.Conv2d(4, 6, 3), lambda: torch.randn(5, 4, 9, 8)[2:]),
    "expanded batch": (lambda: nn.Conv2d(4, 6, 3, stride=2), lambda: torch.randn(1, 4, 9, 8).expand(3, -1, -1, -1)),
    "grouped, same padding": (lambda: nn.Conv2d(4, 6, 4, padding="same", groups=2), lambda: torch.randn(3, 4, 7, 6)),
    "conv1d, transposed input": (lambda: nn.Conv1d(4, 6, 3, dilation=2),
                                 lambda: torch.randn(3, 11, 4).transpose(1, 2)),
}


@pytest.mark.parametrize("case", sorted(COLUMN_INPUTS))
def test_columns_match_unfold(case: str) -> None:
    """``ConvGeometry.columns`` (one copy of an overlapping view) equals ``F.unfold`` of the padded input."""
    make, inputs = COLUMN_INPUTS[case]
    torch.manual_seed(0)
    layer, a = make().double(), inputs().double()
    geo = conv.ConvGeometry(layer, a)
    ref = torch.nn.functional.unfold(geo.padded.contiguous(), geo.kernel, geo.dilation, 0, geo.stride)
    ref = ref.reshape(geo.batch, geo.groups, -1, geo.positions).transpose(-1, -2)
    assert torch.equal(geo.columns(), ref)
    d = torch.randn_like(layer(a))
    v = {"weight": torch.randn_like(layer.weight)}
    for algorithm in ("direct_columns", "ghost_columns"):
        sq, dots = conv.ConvRule(algorithm).statistics(layer, a, d, {"weight"}, [v])
        ref_sq, ref_dots = layer_statistics(layer, a, d, v)
        torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(dots[:, 0], ref_dots, rtol=1e-10, atol=1e-12)
