"""The segmentation U-Net: logits keep the input size (odd sizes too) and every parameter is on the fast path."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import DynamicAL
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.models import UNet
from lightning_dynamical.tasks import Segmentation

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("depth", "size"), [(3, (16, 16)), (3, (17, 23)), (2, (5, 8)), (1, (1, 1))])
def test_logits_keep_the_input_size(depth: int, size: tuple[int, int]) -> None:
    model = UNet(in_channels=3, num_classes=4, width=4, depth=depth).eval()
    assert model(torch.randn(2, 3, *size)).shape == (2, 4, *size)
    assert isinstance(model.head, torch.nn.Conv2d) and model.head.kernel_size == (1, 1)


def test_dropout_is_at_the_bottleneck_and_arguments_are_checked() -> None:
    assert isinstance(UNet(dropout=0.2).dropout, torch.nn.Dropout2d)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d | torch.nn.Dropout2d) for m in UNet().modules())
    with pytest.raises(ConfigError, match="dropout must be a number in"):
        UNet(dropout=1.0)
    with pytest.raises(ConfigError, match="depth must be a positive int"):
        UNet(depth=0)


@pytest.mark.parametrize("size", [(16, 16), (13, 10)])
def test_every_parameter_is_on_the_fast_path(size: tuple[int, int]) -> None:
    model = UNet()
    batch = (torch.randn(3, 1, *size), torch.randint(0, 2, (3, *size)))
    paths = DynamicAL(engine="fast", task=Segmentation()).explain(model, batch)
    assert [p.name for p in paths] == [n for n, _ in model.named_parameters()]
    assert all(p.path.startswith("fast (") for p in paths), [str(p) for p in paths if not p.path.startswith("fast")]


def test_fast_scores_match_the_exact_engine() -> None:
    """The closed forms agree with ``torch.func`` through the upsampling, cropping and concatenation."""
    torch.manual_seed(0)
    model = UNet(width=2, depth=2).double()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    x, y = torch.randn(10, 1, 9, 7, dtype=torch.float64), torch.randint(0, 2, (10, 9, 7))
    pool = DataLoader(TensorDataset(x[:6], y[:6]), batch_size=4)
    labeled = DataLoader(TensorDataset(x[6:], y[6:]), batch_size=4)
    fast = DynamicAL(engine="fast", task=Segmentation(), gamma=2.0).score(model, pool, labeled)
    exact = DynamicAL(engine="func", task=Segmentation(), gamma=2.0).score(model, pool, labeled)
    assert (fast - exact).abs().max() <= 1e-9 * exact.abs().max()
