"""dynamicAL (NeurIPS 2022): query the samples whose gradients most change the training dynamics."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from lightning_dynamical.errors import ConfigError, check_optional_positive_int, check_positive_int
from lightning_dynamical.scoring import (
    ParameterPath,
    ParamSpec,
    PoolStatistics,
    evaluation,
    make_engine,
    scoring_model,
    summed_gradient,
)
from lightning_dynamical.scoring.features import parameters_on
from lightning_dynamical.strategies.base import Reducer, Selection, Strategy, check_finite, identity, top_b
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import LABEL_KEY, batch_inputs, to_model
from lightning_dynamical.tasks.classification import CLASSIFICATION


class DynamicAL(Strategy):
    """``score_u = ||g_u||^2 + gamma * g_u . G_S``, optionally selected greedily in chunks.

    ``g_u`` is the gradient of the task's loss at the pseudo target (``CE_sum(f(x_u), argmax f(x_u))`` for the
    default classification) and ``G_S`` the summed gradient of the labeled set's losses at their targets, both in
    eval mode over the parameters ``params``. ``gamma=0`` is expected gradient length; ``gamma=inf`` keeps only
    ``g_u . G_S``.

    Greedy batch correction (``greedy_chunks=k > 1``): top-b of the per-sample scores ignores the cross
    terms between queried samples in ``||G_S + G_Q||^2`` (Eq. 13). The batch is instead chosen in ``k``
    chunks; after each chunk its summed pseudo-label gradient is added to ``G_Q`` and the rest of the pool
    is re-scored by ``||g_u||^2 + gamma * g_u . (G_S + G_Q)`` (one dot-product pass per chunk). With
    ``gamma=2`` this is the exact marginal gain ``||G_S + G_Q + g_u||^2 - ||G_S + G_Q||^2``; other gammas
    keep the paper's weighting. ``k=1`` is the paper's top-b; ``gamma=0`` makes every ``k`` equal top-b.
    This exact marginal gain is not the authors' step (no version of their code has it).

    Compiled models (``torch.compile``, also of submodules) are scored eagerly through the original modules, and
    half-precision ones in float32 (:func:`~lightning_dynamical.scoring.common.scoring_model`).

    The authors' de-influence step (``deinfluence=k``, their ``ntk_active_memo_efficient.py`` with its defaults):
    the query is chosen in ``k`` chunks (they use chunks of 100 for b=500, i.e. 5); after each chunk the
    gradient of its *mean* pseudo-label loss is added to ``Q``, and the rest of the pool is re-scored by
    ``||g_u||^2 + gamma * g_u . G_S - g_u . Q`` (minus sign, coefficient 1). Either chunked selection needs the
    whole pool, so the strategy is then ``joint``.

    Args:
        gamma: weight of the training-dynamics term, ``>= 0`` or ``inf``.
        params: ``None`` (all trainable parameters), ``"last_layer"`` or a list of parameter names.
        engine: ``"auto"`` (fastest exact engine for the model), ``"fast"``, ``"func"`` or ``"last_layer"``.
        chunk_size: samples per vectorised gradient call (bounds memory).
        greedy_chunks: number of chunks the query is selected in by the exact marginal gain (1 = top-b).
        deinfluence: number of chunks of the authors' de-influence step (``None``: off; they use 5).
        label_key: the target's key in dict (Hugging Face style) batches of the labeled loader.
        task: the loss, pseudo targets and logits' shape (``None``: the data module's, set by the loop through
            :meth:`use_task`, classification until then; :class:`~lightning_dynamical.tasks.Classification`:
            cross-entropy, ``argmax``; :class:`~lightning_dynamical.tasks.MultiLabel`: binary cross-entropy per
            label, ``sigmoid > threshold``; :class:`~lightning_dynamical.tasks.Segmentation`: mean pixel
            cross-entropy, per-pixel ``argmax``; :class:`~lightning_dynamical.tasks.TokenClassification`: mean token
            cross-entropy, per-token ``argmax`` at the real tokens of the attention mask). A task given here must
            equal the data module's.

    Raises:
        ConfigError: ``gamma`` negative or NaN, ``greedy_chunks`` or ``deinfluence`` not a positive int, both set,
            an unknown ``engine``, or a ``task`` that is not a :class:`~lightning_dynamical.tasks.Task`; from
            :meth:`use_task`, a data module's task other than the ``task`` given here.

    Example::

        DynamicAL(gamma=2.0)                  # the paper's top-b
        DynamicAL(gamma=0.0)                  # expected gradient length
        DynamicAL(gamma=2.0, deinfluence=5)   # the authors' de-influence step, 5 chunks
        DynamicAL(task=MultiLabel())          # multi-label: BCE per label, pseudo targets sigmoid > 0.5
    """

    tasks = (Task,)

    def __init__(
        self,
        gamma: float = 2.0,
        params: ParamSpec = None,
        engine: str = "auto",
        chunk_size: int | None = 32,
        greedy_chunks: int = 1,
        label_key: str = LABEL_KEY,
        deinfluence: int | None = None,
        task: Task | None = None,
    ) -> None:
        super().__init__()
        gamma = float(gamma)
        if math.isnan(gamma) or gamma < 0:
            raise ConfigError(f"gamma must be >= 0 or inf, got {gamma}")
        check_positive_int("greedy_chunks", greedy_chunks)
        check_optional_positive_int("deinfluence", deinfluence)
        if deinfluence is not None and greedy_chunks > 1:
            raise ConfigError(f"deinfluence={deinfluence} and greedy_chunks={greedy_chunks} are two different "
                              "chunked selections; set one of them")
        if task is not None and not isinstance(task, Task):
            raise ConfigError(f"task must be null or a Task (Classification(), MultiLabel(), ...), got {task!r}")
        self.gamma = gamma
        self.params = params if params is None or isinstance(params, str) else list(params)
        self.engine = engine
        self.chunk_size = chunk_size
        self.greedy_chunks = int(greedy_chunks)
        self.deinfluence = None if deinfluence is None else int(deinfluence)
        self.label_key = label_key
        self.task = task if task is not None else CLASSIFICATION
        self._task_given = task is not None
        self._engine = make_engine(engine, chunk_size)
        self._last_statistics: PoolStatistics | None = None
        self._last_gains: Tensor | None = None

    def use_task(self, task: Task) -> None:
        """Take the loop's task, unless the constructor was given another one (refused, naming both)."""
        self.check_task(task)
        if self._task_given and self.task != task:
            raise ConfigError(f"DynamicAL was given task={self.task!r} but the data module's task is {task!r}; "
                              "leave DynamicAL's task unset (it follows the data module's) or make the two equal")
        self.task = task

    @property
    def joint(self) -> bool:  # type: ignore[override]
        """Chunked selection needs the whole pool on every rank."""
        return self.greedy_chunks > 1 or self.deinfluence is not None

    @property
    def last_statistics(self) -> PoolStatistics | None:
        """``||g_u||^2`` and ``g_u . G_S`` of the last scored pool (diagnostics)."""
        return self._last_statistics

    @property
    def last_gains(self) -> Tensor | None:
        """Greedy marginal gains of the last selection, in selection order (``None`` for top-b)."""
        return self._last_gains

    def explain(self, model: nn.Module, batch: Any) -> list[ParameterPath]:
        """How each selected parameter is scored on ``batch`` (a pool batch as the loader yields it): the
        fast closed form (and which op), ``unused``, ``last_layer``, or a slow exact path with the reason."""
        with scoring_model(model) as model, evaluation(model):
            params = parameters_on(model, self.params, [batch], self.label_key, self.task)
            return self._engine.explain(model, to_model(batch_inputs(batch, self.label_key), model), params,
                                        self.task)

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], *,
              reduce: Reducer = identity, progress: bool = False) -> Tensor:
        with scoring_model(model) as model, evaluation(model):
            return self._score(model, pool_loader, labeled_loader, reduce, progress)[0]

    def select(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], query_size: int, *,
               reduce: Reducer = identity, progress: bool = False) -> Selection:
        """Top-b, or the chunked selection of ``greedy_chunks > 1`` or ``deinfluence``; pseudo labels are the
        task's pseudo targets (``argmax f(x_u)`` for classification)."""
        self._last_gains = None
        with scoring_model(model) as model, evaluation(model):
            scores, params = self._score(model, pool_loader, labeled_loader, reduce, progress)
            stats = self._statistics()
            chunks = self.deinfluence or (self.greedy_chunks if self.gamma != 0 else 1)
            if chunks == 1:
                return Selection.top(scores, query_size, stats.pseudo_labels)
            positions = self._greedy(model, pool_loader, params, check_finite(scores), query_size, progress, chunks)
        return Selection.of_pool(positions, scores, stats.pseudo_labels)

    def _statistics(self) -> PoolStatistics:
        if self._last_statistics is None:
            raise RuntimeError("DynamicAL has not scored a pool yet")
        return self._last_statistics

    def _score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], reduce: Reducer,
               progress: bool) -> tuple[Tensor, dict[str, nn.Parameter]]:
        params = parameters_on(model, self.params, pool_loader, self.label_key, self.task)
        directions = []
        if self.gamma != 0:
            g_s = summed_gradient(model, labeled_loader, params, label_key=self.label_key, task=self.task)
            directions = [{n: reduce(g) for n, g in g_s.items()}]
        stats = self._engine.pool_statistics(model, pool_loader, params, directions, progress, self.label_key,
                                             self.task)
        self._last_statistics = stats
        return self._combine(stats.sqnorm, stats.dots[:, 0] if directions else None), params

    def _combine(self, sqnorm: Tensor, dots: Tensor | None) -> Tensor:
        if dots is None:
            return sqnorm
        return dots if math.isinf(self.gamma) else sqnorm + self.gamma * dots

    def _greedy(self, model: nn.Module, pool_loader: Any, params: dict[str, nn.Parameter], scores: Tensor,
                query_size: int, progress: bool, chunks: int) -> Tensor:
        """Select chunk by chunk. Greedy: ``dots`` accumulates ``g_u . (G_S + G_Q)`` by linearity. De-influence:
        ``shift`` accumulates ``-g_u . Q``, ``Q`` the sum of the chosen chunks' mean-loss gradients."""
        n = scores.numel()
        stats = self._statistics()
        sqnorm = stats.sqnorm
        dots = stats.dots[:, 0].clone() if stats.dots.shape[1] else torch.zeros_like(sqnorm)
        shift = torch.zeros_like(dots)
        remaining = torch.ones(n, dtype=torch.bool)
        chosen, gains = [], []
        sizes = chunk_sizes(min(query_size, n), chunks)
        for i, size in enumerate(sizes):
            candidates = remaining.nonzero().squeeze(1)
            current = self._combine(sqnorm[candidates], dots[candidates]) + shift[candidates]
            picked = candidates[top_b(check_finite(current, candidates), size)]
            chosen.append(picked)
            gains.append(self._combine(sqnorm[picked], dots[picked]) + shift[picked])
            remaining[picked] = False
            if i + 1 < len(sizes):
                g_chunk = summed_gradient(model, subset_loader(pool_loader, picked.tolist()), params,
                                          pseudo_labels=True, label_key=self.label_key, task=self.task)
                if self.deinfluence is not None:
                    g_chunk = {name: g / picked.numel() for name, g in g_chunk.items()}
                rest = remaining.nonzero().squeeze(1)
                stats = self._engine.pool_statistics(model, subset_loader(pool_loader, rest.tolist()), params,
                                                     [g_chunk], progress, self.label_key, self.task)
                if self.deinfluence is not None:
                    shift[rest] -= stats.dots[:, 0].to(shift)
                else:
                    dots[rest] += stats.dots[:, 0].to(dots)
        self._last_gains = torch.cat(gains) if gains else scores.new_zeros(0)
        return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)


def chunk_sizes(total: int, chunks: int) -> list[int]:
    """``total`` split into at most ``chunks`` non-empty, nearly equal parts (larger first)."""
    base, extra = divmod(total, chunks)
    return [s for s in (base + (i < extra) for i in range(chunks)) if s > 0]


def subset_loader(loader: Any, positions: Sequence[int]) -> DataLoader:
    """A non-shuffled loader over ``positions`` of ``loader.dataset`` with the loader's batching."""
    if not hasattr(loader, "dataset"):
        raise TypeError("greedy_chunks > 1 needs a pool loader with a .dataset (e.g. a DataLoader)")
    return DataLoader(Subset(loader.dataset, list(positions)), batch_size=getattr(loader, "batch_size", None) or 64,
                      shuffle=False, collate_fn=getattr(loader, "collate_fn", None),
                      num_workers=getattr(loader, "num_workers", 0),
                      generator=torch.Generator().manual_seed(0))  # iterating it leaves the global RNG alone

