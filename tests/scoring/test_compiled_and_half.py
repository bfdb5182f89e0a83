"""Compiled and half-precision models are scored exactly: ``torch.compile`` (of the model, a submodule, or the whole
LightningModule given to ``trainer.fit``) eagerly through the original modules, and ``precision="bf16-true"``
weights in float32."""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamical import ActiveLearningLoop, Classifier, DynamicAL
from lightning_dynamical.strategies.base import Selection
from tests.helpers.brute_force import dynamical_scores
from tests.helpers.models import TinyCNN, trained_like
from tests.helpers.tiny import digits_datamodule, fit_loop

pytestmark = pytest.mark.usefixtures("one_thread")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def no_dynamo() -> Iterator[None]:
    """Fail if dynamo compiles a frame, or anything logs on the ``torch`` loggers (which do not propagate to the
    root logger, so ``caplog`` would miss them), or a warning is raised, inside the block."""
    handler, torch_logger = _Records(), logging.getLogger("torch")
    frames = dict(counters["frames"])
    torch_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        torch_logger.removeHandler(handler)
    assert dict(counters["frames"]) == frames, "dynamo compiled frames while scoring"
    assert [r.getMessage() for r in handler.records if r.levelno >= logging.INFO] == []
    assert [str(w.message) for w in caught] == []


def _data(dtype: torch.dtype = torch.float64) -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 6, 6, generator=gen, dtype=dtype)
    y = torch.randint(0, 4, (10,), generator=gen)
    return DataLoader(TensorDataset(x[:30]), batch_size=7), DataLoader(TensorDataset(x[30:], y), batch_size=4)


def test_a_compiled_model_scores_like_the_original_without_dynamo():
    """``torch.compile(model)`` (already run once, so compiled code exists) and a module holding a compiled
    submodule score bit-identically to the eager model in float64, ``explain`` names the original parameters, no
    frame is compiled and nothing is logged; the compiled wrappers are left as they were."""
    pool, labeled = _data()
    plain = trained_like(TinyCNN(1, 4).double(), next(iter(pool))[0]).eval()
    compiled = torch.compile(plain, backend="eager")
    compiled(next(iter(pool))[0])
    holder = nn.Sequential(nn.Identity(), torch.compile(plain, backend="eager"))
    strategy = DynamicAL(greedy_chunks=2)
    expected = DynamicAL().score(plain, pool, labeled)
    expected_paths = DynamicAL().explain(plain, next(iter(pool)))
    assert not any("_orig_mod" in str(p) for p in expected_paths)
    with no_dynamo():
        scores = DynamicAL().score(compiled, pool, labeled)
        selection = strategy.select(compiled, pool, labeled, 6)
        nested = DynamicAL().score(holder, pool, labeled)
        paths = DynamicAL().explain(compiled, next(iter(pool)))
        nested_paths = DynamicAL().explain(holder, next(iter(pool)))
    assert torch.equal(scores, expected) and torch.equal(nested, expected)
    assert torch.equal(selection.positions, DynamicAL(greedy_chunks=2).select(plain, pool, labeled, 6).positions)
    assert paths == expected_paths
    assert [p.name for p in nested_paths] == [f"1.{p.name}" for p in expected_paths]
    assert compiled._orig_mod is plain and isinstance(holder[1], torch._dynamo.eval_frame.OptimizedModule)
    assert [n for n, _ in holder.named_parameters()][0] == "1._orig_mod.conv.weight"


class _Checked(DynamicAL):
    """Scores the loop's query, then checks it against ``reference(model, pool_loader, labeled_loader)``."""

    def __init__(self, reference: Any) -> None:
        super().__init__(chunk_size=16)
        self.reference, self.checked = reference, 0

    def select(self, model: nn.Module, pool_loader: Any, labeled_loader: Any, query_size: int, **kwargs: Any
               ) -> Selection:
        params = list(model.parameters())
        with no_dynamo():
            selection = super().select(model, pool_loader, labeled_loader, query_size, **kwargs)
            paths = self.explain(model, next(iter(pool_loader)))
        assert not any("_orig_mod" in p.name for p in paths)
        assert all(a is b for a, b in zip(params, model.parameters(), strict=True))  # put back, the same objects
        self.reference(model, pool_loader, labeled_loader, selection, query_size)
        self.checked += 1
        return selection


def _eager_net(model: nn.Module) -> nn.Module:
    net = model.net
    return net._orig_mod if isinstance(net, torch._dynamo.eval_frame.OptimizedModule) else net


@pytest.mark.parametrize("where", ["net", "module"])
def test_the_loop_scores_a_compiled_classifier_eagerly(tmp_path, where):
    """``Classifier(torch.compile(net))`` and ``trainer.fit(torch.compile(classifier))`` (Lightning compiles the
    module's forward) train compiled; the loop's query is scored eagerly, exactly as the eager net scores."""

    def reference(model, pool_loader, labeled_loader, selection, query_size):
        eager = DynamicAL(chunk_size=16).select(_eager_net(model), pool_loader, labeled_loader, query_size)
        assert torch.equal(selection.positions, eager.positions)
        torch.testing.assert_close(selection.pool_scores, eager.pool_scores, rtol=1e-6, atol=0)

    L.seed_everything(0)
    strategy = _Checked(reference)
    net = TinyCNN(1, 10)
    model: Any = Classifier(torch.compile(net, backend="eager") if where == "net" else net, num_classes=10)
    if where == "module":
        model = torch.compile(model, backend="eager")
    loop = ActiveLearningLoop(strategy, query_size=10, rounds=1, max_epochs_per_round=1, pool_subset=60,
                              train_acc_threshold=None, dirpath=str(tmp_path), verbose=False,
                              save_round_checkpoints=False)
    with pytest.warns(UserWarning, match="max_epochs_per_round=1"):
        fit_loop(model, digits_datamodule(batch_size=16, test_size=50), loop, tmp_path)
    assert strategy.checked == 1 and len(loop.history) == 2


def test_bf16_true_weights_are_scored_exactly_in_float32(tmp_path):
    """``Trainer(precision="bf16-true")`` keeps the weights (and BatchNorm statistics) in bfloat16. "Exact" here:
    the dynamicAL scores of those stored weights in exact arithmetic, i.e. a float64 brute force (one autograd call
    per sample) on the same weights upcast to float64 and on the data as stored. Scoring runs in float32 and matches
    it to float32 rounding, with the same top-b; a bfloat16 forward alone is off by about 1e-2 relative. The
    weights stay bfloat16, the same parameter objects, after scoring."""
    seen: list[tuple[float, bool]] = []

    def reference(model, pool_loader, labeled_loader, selection, query_size):
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        assert model.net.bn.running_var.dtype == torch.bfloat16
        pool_x = torch.cat([x for x, _ in pool_loader]).double()
        lab_x, lab_y = (torch.cat(t) for t in zip(*labeled_loader))
        exact = dynamical_scores(copy.deepcopy(model.net).double(), pool_x, lab_x.double(), lab_y, 2.0)
        scores = selection.pool_scores
        assert scores.dtype == torch.float32
        error = float((scores.double() - exact).abs().max() / exact.abs().max())
        seen.append((error, torch.equal(selection.positions, torch.topk(exact, query_size).indices)))

    L.seed_everything(0)
    strategy = _Checked(reference)
    loop = ActiveLearningLoop(strategy, query_size=10, rounds=1, max_epochs_per_round=2, pool_subset=80,
                              train_acc_threshold=None, dirpath=str(tmp_path), verbose=False,
                              save_round_checkpoints=False)
    with pytest.warns(UserWarning, match="max_epochs_per_round=2"):
        fit_loop(Classifier(TinyCNN(1, 10), num_classes=10, lr=1e-2), digits_datamodule(batch_size=16, test_size=50),
                 loop, tmp_path, precision="bf16-true")
    assert len(seen) == 1
    error, same_top_b = seen[0]
    assert error < 1e-5 and same_top_b


def test_scoring_under_bf16_autocast_stays_on_the_fast_path():
    """Called inside ``torch.autocast`` (bf16-mixed), the layers run in bfloat16 but the closed forms take each
    call's input and output gradient in the parameters' float32: every parameter stays on the fast path, and the
    scores are the float32 ones up to bfloat16 rounding of the forward and backward."""
    from lightning_dynamical.scoring import FastEngine, select_parameters

    torch.manual_seed(0)
    x = torch.randn(12, 1, 8, 8)
    model = trained_like(TinyCNN(1, 4), x).eval()
    params = select_parameters(model, None)
    direction = [{n: torch.randn_like(p) for n, p in params.items()}]
    engine = FastEngine()
    sq32, dots32, _ = engine.batch_statistics(model, x, params, direction)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sq, dots, _ = engine.batch_statistics(model, x, params, direction)
    assert all(p.path.startswith("fast") for p in engine.paths.values())
    assert sq.dtype == torch.float32
    assert float((sq - sq32).abs().max() / sq32.abs().max()) < 5e-2
    assert float((dots - dots32).abs().max() / dots32.abs().max()) < 5e-2
