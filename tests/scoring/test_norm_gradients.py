"""PyTorch's CPU BatchNorm backward is wrong for one sample with a broadcast channels-last output gradient (the
XCiT / LeViT pattern ``bn(conv(x)).flatten(2).transpose(1, 2).mean(1)``); every scoring path that runs a batch of
one (the pool's and the labeled set's last batch, the per-sample loop) hands it a dense gradient instead. The
reference takes each sample's gradient from one forward of the whole pool, where no batch has one sample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical.scoring.norm_gradients import dense_gradient
from tests.helpers.brute_force import assert_dynamical_exact

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]


class PatchTokens(nn.Module):
    """A strided convolution, BatchNorm (2-d or 3-d), its map as tokens, their mean, a head."""

    def __init__(self, three_d: bool = False) -> None:
        super().__init__()
        self.three_d = three_d
        conv, norm = (nn.Conv3d, nn.BatchNorm3d) if three_d else (nn.Conv2d, nn.BatchNorm2d)
        self.c = conv(4, 6, 3, 2, 1, bias=False)
        self.bn = norm(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bn(self.c(x)).flatten(2).transpose(1, 2).mean(1))


def _model(three_d: bool, hooked: bool) -> nn.Module:
    torch.manual_seed(0)
    model = PatchTokens(three_d).double()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 2)
    if hooked:  # a gradient hook sends the convolution to the per-sample loop
        model.c.weight.register_hook(lambda g: g)
    return model


def _per_sample(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Each sample's gradient from one forward of all of them (eval mode: samples are independent)."""
    params = list(model.parameters())
    logits = model.eval()(x)
    rows = []
    for i in range(x.shape[0]):
        target = logits[i: i + 1].argmax(1).detach() if y is None else y[i: i + 1]
        loss = F.cross_entropy(logits[i: i + 1], target, reduction="sum")
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)]))
    return torch.stack(rows)


@pytest.mark.parametrize("three_d", [False, True])
@pytest.mark.parametrize("hooked", [False, True])
def test_batches_of_one_sample_score_as_in_a_larger_batch(three_d: bool, hooked: bool) -> None:
    model = _model(three_d, hooked)
    shape = (4, 4, 4, 4) if three_d else (4, 6, 6)
    torch.manual_seed(1)
    pool_x, lab_x, lab_y = torch.randn(5, *shape).double(), torch.randn(3, *shape).double(), torch.tensor([0, 2, 1])
    g, g_s = _per_sample(model, pool_x), _per_sample(model, lab_x, lab_y).sum(0)
    model.train()
    pool = DataLoader(TensorDataset(pool_x, torch.zeros(5, dtype=torch.long)), batch_size=4)  # last batch: one
    labeled = DataLoader(TensorDataset(lab_x, lab_y), batch_size=2)  # last batch: one
    assert_dynamical_exact(model, pool, labeled, g, g_s)


def test_only_one_sample_gradients_with_strides_of_no_dense_layout_are_copied() -> None:
    base = torch.randn(400, dtype=torch.float64)
    broadcast = base.as_strided((1, 4, 3, 3), (0, 1, 12, 4))
    assert torch.equal(dense_gradient(broadcast), broadcast) and dense_gradient(broadcast).is_contiguous()
    assert dense_gradient(base.as_strided((1, 4, 2, 3, 3), (7, 1, 36, 12, 4))).is_contiguous()
    for kept in (torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3).contiguous(memory_format=torch.channels_last),
                 base.as_strided((2, 4, 3, 3), (0, 1, 12, 4)), torch.randn(1, 4, 5)):
        assert dense_gradient(kept) is None
