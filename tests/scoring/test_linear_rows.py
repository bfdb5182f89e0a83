"""Linear layers skip the positions whose output gradient is exactly zero (a transformer's last block when it
classifies from the first token; padded tokens): the statistics stay those of every position."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_dynamical.scoring.layers import matmul
from tests.helpers.brute_force import layer_statistics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("rows", ["first only", "ragged lengths", "all live", "none live"])
@pytest.mark.parametrize("ghost", [True, False, None])
def test_zero_rows_are_skipped_exactly(monkeypatch: pytest.MonkeyPatch, rows: str, ghost: bool | None) -> None:
    """``ghost=None``: the rule's own choice (its cost model must take a zero gradient everywhere, as a
    zero-initialised head gives, without dividing by zero rows)."""
    if ghost is not None:
        monkeypatch.setattr(matmul, "prefer_ghost", lambda *args: ghost)
    torch.manual_seed(0)
    layer = nn.Linear(6, 5).double()
    a = torch.randn(4, 12, 6, dtype=torch.float64)
    d = torch.randn(4, 12, 5, dtype=torch.float64)
    if rows == "first only":
        d[:, 1:] = 0
    elif rows == "ragged lengths":
        for i, n in enumerate((2, 5, 0, 3)):
            d[i, n:] = 0
    elif rows == "none live":
        d.zero_()
    v = {"weight": torch.randn_like(layer.weight), "bias": torch.randn_like(layer.bias)}
    cols, dpos = matmul.live_rows(a.unsqueeze(1), d.unsqueeze(1))
    expected_rows = {"first only": 1, "ragged lengths": 5, "all live": 12, "none live": 1}[rows]
    assert cols.shape[2] == dpos.shape[2] == expected_rows
    if rows in ("first only", "ragged lengths"):  # a non-finite gradient keeps its row: caught, never dropped
        bad = d.clone()
        bad[0, 3, 2] = float("nan")
        bad[3, 4, 0] = float("-inf")
        assert matmul.live_rows(a.unsqueeze(1), bad.unsqueeze(1))[1].shape[2] < 12  # rows are still dropped
        bad_sq, _ = matmul.LinearRule().statistics(layer, a, bad, {"weight", "bias"}, [v])
        assert not bad_sq[0].isfinite() and not bad_sq[3].isfinite() and bad_sq[1:3].isfinite().all()
    sq, dots = matmul.LinearRule().statistics(layer, a, d, {"weight", "bias"}, [v])
    ref_sq, ref_dots = layer_statistics(layer, a, d, v)
    torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dots[:, 0], ref_dots, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("directions", [0, 1, 3])
def test_direct_form_in_sample_chunks(monkeypatch: pytest.MonkeyPatch, directions: int) -> None:
    """Large layers form ``g_i`` a few samples at a time into one buffer (here 2 per chunk on 5 samples: the last
    chunk is short); the statistics are the brute force's."""
    monkeypatch.setattr(matmul, "prefer_ghost", lambda *args: False)
    monkeypatch.setattr(matmul, "DIRECT_LIMIT", 0)
    monkeypatch.setattr(matmul, "DIRECT_CHUNK", 2 * 6 * 5)
    torch.manual_seed(0)
    layer = nn.Linear(6, 5).double()
    a = torch.randn(5, 7, 6, dtype=torch.float64)
    d = torch.randn(5, 7, 5, dtype=torch.float64)
    vs = [{"weight": torch.randn_like(layer.weight), "bias": torch.randn_like(layer.bias)} for _ in range(directions)]
    sq, dots = matmul.LinearRule().statistics(layer, a, d, {"weight", "bias"}, vs)
    assert dots.shape == (5, directions)
    for k in range(max(directions, 1)):
        ref_sq, ref_dots = layer_statistics(layer, a, d, vs[k] if vs else {"weight": layer.weight, "bias": layer.bias})
        torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
        if vs:
            torch.testing.assert_close(dots[:, k], ref_dots, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sizes", [(3, 7), (7, 3)], ids=["more outputs", "more inputs"])
@pytest.mark.parametrize("layout", ["inputs contiguous", "positions contiguous"])
def test_direct_statistics_in_both_orientations(monkeypatch: pytest.MonkeyPatch, sizes: tuple[int, int],
                                                layout: str) -> None:
    """``g_i`` formed as it is or transposed (by shape and layout), two samples per chunk, groups and three distinct
    directions: norms and dot products as from the explicit per-sample gradients."""
    torch.manual_seed(0)
    (fan_in, p), b, groups, t = sizes, 5, 2, 4
    monkeypatch.setattr(matmul, "DIRECT_LIMIT", 0)
    monkeypatch.setattr(matmul, "DIRECT_CHUNK", 2 * groups * fan_in * p)
    cols = torch.randn(b, groups, t, fan_in, dtype=torch.float64)
    if layout == "positions contiguous":
        cols = cols.transpose(-1, -2).contiguous().transpose(-1, -2)
    dpos = torch.randn(b, groups, t, p, dtype=torch.float64)
    weights = [torch.randn(groups, p, fan_in, dtype=torch.float64) for _ in range(3)]
    sq, dots = matmul.direct_statistics(cols, dpos, weights)
    g = torch.einsum("bgtp,bgtd->bgpd", dpos, cols).reshape(b, -1)
    torch.testing.assert_close(sq, (g * g).sum(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dots, g @ torch.stack([w.reshape(-1) for w in weights], 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("directions", [0, 1, 2])
@pytest.mark.parametrize("rule", ["linear", "addmm"])
@pytest.mark.parametrize("positions", [1, 5])
def test_bias_folded_into_the_ghost_form(monkeypatch: pytest.MonkeyPatch, directions: int, rule: str,
                                         positions: int) -> None:
    """The ghost form with the bias folded in (columns extended by a one) gives the weight's and the bias's statistics
    together, for any number of directions, with some rows dropped, and through ``addmm``'s transposed weight."""
    calls: list[bool] = []
    real = matmul.ghost_statistics

    def spy(*args, **kwargs):
        calls.append(kwargs.get("biases", args[3] if len(args) > 3 else None) is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(matmul, "prefer_ghost", lambda *args: True)
    monkeypatch.setattr(matmul, "ghost_statistics", spy)
    torch.manual_seed(0)
    layer = nn.Linear(6, 5).double()
    a = torch.randn(4, positions, 6, dtype=torch.float64)
    d = torch.randn(4, positions, 5, dtype=torch.float64)
    d[1, 0] = 0
    vs = [{"weight": torch.randn_like(layer.weight), "bias": torch.randn_like(layer.bias)} for _ in range(directions)]
    if rule == "linear":
        sq, dots = matmul.LinearRule().statistics(layer, a, d, {"weight", "bias"}, vs)
    else:
        spec = type("Conv1D", (), {"weight": layer.weight.T, "bias": layer.bias})()
        local = [{"weight": v["weight"].T, "bias": v["bias"]} for v in vs]
        sq, dots = matmul.AddmmRule().statistics(spec, a, d, {"weight", "bias"}, local)
    assert calls == [True]
    ref_sq, _ = layer_statistics(layer, a, d, {"weight": layer.weight, "bias": layer.bias})
    torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
    assert dots.shape == (4, directions)
    for k, v in enumerate(vs):
        torch.testing.assert_close(dots[:, k], layer_statistics(layer, a, d, v)[1], rtol=1e-10, atol=1e-12)
