"""Scratch memory reused across calls: every closed form that takes it gives, inside ``reusing()`` and after buffers
were left dirty by a larger call, what per-sample ``torch.autograd.grad`` gives (float64); the pool pass frees it."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from lightning_dynamical.scoring import make_engine, select_parameters
from lightning_dynamical.scoring.layers import conv, matmul
from lightning_dynamical.scoring.layers.scratch import Scratch, derived, reusing, scratch
from tests.helpers.brute_force import layer_statistics

pytestmark = pytest.mark.usefixtures("one_thread")


def test_slot_is_reused_grown_and_kept_apart_by_dtype() -> None:
    space = Scratch()
    like = torch.zeros(1)
    a = space.take("s", (2, 3), like)
    b = space.take("s", (4,), like)
    assert b.data_ptr() == a.data_ptr() and b.shape == (4,)
    c = space.take("s", (5, 5), like)  # grows: a new buffer
    assert c.shape == (5, 5) and space.nbytes() == 25 * 4
    d = space.take("s", (5, 5), like.double())
    assert d.dtype == torch.float64 and d.data_ptr() != c.data_ptr()
    assert space.take("t", (5, 5), like).data_ptr() != c.data_ptr()


def test_scratch_outside_reusing_or_on_another_thread_allocates() -> None:
    like = torch.zeros(1)
    assert scratch("s", (3,), like).data_ptr() != scratch("s", (3,), like).data_ptr()
    seen: list[int] = []
    with reusing() as space:
        first = scratch("s", (3,), like)
        assert first.data_ptr() == space.take("s", (3,), like).data_ptr()
        thread = threading.Thread(target=lambda: seen.append(scratch("s", (3,), like).data_ptr()))
        thread.start()
        thread.join()
        with reusing() as inner:
            assert scratch("s", (3,), like).data_ptr() == inner.take("s", (3,), like).data_ptr()
        assert scratch("s", (3,), like).data_ptr() == first.data_ptr()
    assert seen and seen[0] != first.data_ptr()
    assert scratch("s", (3,), like).data_ptr() != first.data_ptr()


def _conv_case(batch: int, size: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    layer = nn.Conv2d(3, 4, 3, padding=1).double()
    a = torch.randn(batch, 3, size, size, dtype=torch.float64)
    d = torch.randn_like(layer(a))
    return layer, a, d, torch.randn_like(layer.weight)


@pytest.mark.parametrize("algorithm", sorted(conv.ALGORITHMS))
def test_conv_algorithms_with_dirty_scratch(algorithm: str) -> None:
    """A larger call first fills every slot with nonzero data; the smaller call must not read any of it (the column
    forms go through the matmul forms' slots)."""
    torch.manual_seed(0)
    rule = conv.ConvRule(algorithm)
    with reusing() as space:
        for batch, size in ((5, 9), (3, 6)):
            layer, a, d, v = _conv_case(batch, size)
            sq, dots = rule.statistics(layer, a, d, {"weight"}, [{"weight": v}])
            ref_sq, ref_dots = layer_statistics(layer, a, d, {"weight": v})
            torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(dots[:, 0], ref_dots, rtol=1e-10, atol=1e-12)
    if algorithm.endswith("columns"):  # through the matmul forms
        assert space.nbytes() > 0


@pytest.mark.parametrize("form", ["direct", "ghost"])
def test_matmul_forms_with_dirty_scratch(form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    monkeypatch.setattr(matmul, "prefer_ghost", lambda *args: form == "ghost")
    monkeypatch.setattr(matmul, "DIRECT_LIMIT", 0)  # chunks of samples into the scratch buffer
    monkeypatch.setattr(matmul, "DIRECT_CHUNK", 2 * 6 * 5)
    rule = matmul.LinearRule()
    with reusing():
        for batch, positions in ((6, 7), (5, 4)):
            layer = nn.Linear(5, 6).double()
            a = torch.randn(batch, positions, 5, dtype=torch.float64)
            d = torch.randn(batch, positions, 6, dtype=torch.float64)
            v = torch.randn_like(layer.weight)
            sq, dots = rule.statistics(layer, a, d, {"weight"}, [{"weight": v}])
            ref_sq, ref_dots = layer_statistics(layer, a, d, {"weight": v})
            torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(dots[:, 0], ref_dots, rtol=1e-10, atol=1e-12)


def test_pool_pass_reuses_scratch_and_frees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``pool_statistics`` serves the rules from one space for all batches and drops it at the end."""
    spaces: list[Scratch] = []
    real = Scratch.take

    def take(self: Scratch, slot: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        spaces.append(self)
        return real(self, slot, shape, like)

    monkeypatch.setattr(Scratch, "take", take)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 4)).double().eval()
    params = select_parameters(model, None)
    x = torch.randn(12, 3, 6, 6, dtype=torch.float64)
    loader = [x[:5], x[5:10], x[10:]]
    engine = make_engine("auto", 32)
    stats = engine.pool_statistics(model, loader, params)
    assert len({id(s) for s in spaces}) == 1 and len(spaces) >= len(loader)
    alone = torch.cat([engine.batch_statistics(model, b, params, [])[0] for b in loader])
    torch.testing.assert_close(stats.sqnorm, alone, rtol=1e-12, atol=0)
    assert scratch("s", (3,), x).data_ptr() != scratch("s", (3,), x).data_ptr()


def test_derived_is_made_once_per_source_and_version() -> None:
    """Inside ``reusing()`` a derived tensor is remade for another source (even with equal values, or another view of
    the same storage), an in-place change of the source, or another slot; outside, every call makes it."""
    made: list[int] = []

    def double(t: torch.Tensor) -> torch.Tensor:
        made.append(1)
        return t * 2

    v = torch.arange(6.0)
    with reusing() as space:
        first = derived("x2", (v,), double)
        assert derived("x2", (v,), double) is first and len(made) == 1
        assert space.nbytes() == first.numel() * 4
        twin = v.clone()
        assert derived("x2", (twin,), double) is not first and len(made) == 2
        view = v[1:]
        assert torch.equal(derived("x2", (view,), double), v[1:] * 2) and len(made) == 3
        assert derived("x3", (v,), double) is not first and len(made) == 4
        v.add_(1)
        assert torch.equal(derived("x2", (v,), double), (torch.arange(6.0) + 1) * 2) and len(made) == 5
    derived("x2", (v,), double)
    derived("x2", (v,), double)
    assert len(made) == 7


def test_cropped_direction_changed_in_place_between_batches() -> None:
    """A convolution on a 1x1 map crops the direction to its centre tap once per pool pass; a direction changed in
    place between two batches is cropped again (statistics against per-sample autograd, float64)."""
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 5, 3, padding=1).double()
    v = torch.randn_like(layer.weight)
    rule = conv.ConvRule()
    with reusing():
        for _ in range(2):
            a = torch.randn(3, 4, 1, 1, dtype=torch.float64)
            d = torch.randn(3, 5, 1, 1, dtype=torch.float64)
            _, dots = rule.statistics(layer, a, d, {"weight"}, [{"weight": v}])
            _, ref_dots = layer_statistics(layer, a, d, {"weight": v})
            torch.testing.assert_close(dots[:, 0], ref_dots, rtol=1e-10, atol=1e-12)
            v.mul_(-3)


def test_derived_entries_do_not_grow_with_the_batches() -> None:
    """Directions that are not contiguous (channels-last, transposed) are reshaped once per pass, not once per batch:
    the derived entries after the tenth batch are those after the first (values checked against autograd)."""
    torch.manual_seed(0)
    stem = nn.Conv2d(3, 6, 3, padding=1).double()
    v_stem = torch.randn_like(stem.weight).contiguous(memory_format=torch.channels_last)
    dense = nn.Linear(5, 7).double()
    v_dense = torch.randn(5, 7, dtype=torch.float64).T  # transposed view: not contiguous
    sizes = []
    with reusing() as space:
        for _ in range(10):
            a, d = torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.randn(2, 6, 5, 5, dtype=torch.float64)
            _, dots = conv.ConvRule("direct_columns").statistics(stem, a, d, {"weight"}, [{"weight": v_stem}])
            torch.testing.assert_close(dots[:, 0], layer_statistics(stem, a, d, {"weight": v_stem})[1],
                                       rtol=1e-10, atol=1e-12)
            a, d = torch.randn(2, 9, 5, dtype=torch.float64), torch.randn(2, 9, 7, dtype=torch.float64)
            _, dots = matmul.LinearRule().statistics(dense, a, d, {"weight"}, [{"weight": v_dense}])
            torch.testing.assert_close(dots[:, 0], layer_statistics(dense, a, d, {"weight": v_dense})[1],
                                       rtol=1e-10, atol=1e-12)
            sizes.append((len(space._derived), space.nbytes()))
    assert sizes[0][0] > 0 and sizes[-1] == sizes[0]


def test_inference_mode_directions() -> None:
    """Directions made under ``torch.inference_mode()`` (no version counter) are used as they are, every batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).double()
    model.eval()
    params = select_parameters(model, None)
    with torch.inference_mode():
        frozen = {n: torch.randn_like(p) for n, p in params.items()}
    plain = {n: t.clone() for n, t in frozen.items()}
    loader = [torch.randn(3, 3, 2, 2, dtype=torch.float64) for _ in range(3)]
    engine = make_engine("auto", 32)
    got = engine.pool_statistics(model, loader, params, [frozen])
    want = engine.pool_statistics(model, loader, params, [plain])
    torch.testing.assert_close(got.dots, want.dots, rtol=0, atol=0)
