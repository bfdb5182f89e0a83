"""The strategy contract: ``score`` the pool, ``select`` a :class:`Selection` (joint strategies override it), and
``use_task``: the task the loop names, refused with the reason by a strategy that does not apply to it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import LABEL_KEY
from lightning_dynamical.tasks.classification import CLASSIFICATION, Classification

Reducer = Callable[[Tensor], Tensor]


def identity(t: Tensor) -> Tensor:
    """The single-process ``reduce``: nothing to sum over."""
    return t


class NonFiniteScoresError(RuntimeError):
    """A strategy produced NaN or inf scores.

    ``positions`` are the offending entries' positions in the pool loader's order (the first ten, ``[]`` when
    unknown); the loop turns them into pool ``indices`` and names the ``checkpoint`` to resume from once repaired.
    """

    def __init__(self, message: str, positions: Sequence[int] = (), indices: Sequence[int] = (),
                 checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.positions, self.indices, self.checkpoint = list(positions), list(indices), checkpoint


@dataclass(frozen=True, eq=False)
class Selection:
    """What a strategy chose: the one thing ``select`` returns.

    Attributes:
        positions: ``(b,)`` int64 positions into the pool loader's order, in selection order.
        scores: ``(b,)`` scores of the selected samples, or ``None`` when the strategy has none.
        pseudo_labels: ``(b,)`` ``argmax f(x)`` of the selected samples when the strategy computed them.
        pool_scores: ``(N,)`` scores of the whole pool in loader order (for logging), or ``None``.
    """

    positions: Tensor
    scores: Tensor | None = None
    pseudo_labels: Tensor | None = None
    pool_scores: Tensor | None = None

    def __post_init__(self) -> None:
        b = self.positions.numel()
        for name in ("scores", "pseudo_labels"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != b:
                raise ValueError(f"Selection.{name} has {value.shape[0]} entries for {b} positions")

    @classmethod
    def top(cls, scores: Tensor, query_size: int, pseudo_labels: Tensor | None = None) -> Selection:
        """The ``query_size`` highest of the pool's ``scores`` (see :func:`top_b`); ``pseudo_labels`` are the
        pool's, in loader order, or ``None``."""
        positions = top_b(check_finite(scores), query_size)
        return cls.of_pool(positions, scores, pseudo_labels)

    @classmethod
    def of_pool(cls, positions: Tensor, scores: Tensor | None, pseudo_labels: Tensor | None = None) -> Selection:
        """``positions`` with the pool-wide ``scores`` and ``pseudo_labels`` (loader order) picked out."""
        return cls(positions, None if scores is None else scores[positions],
                   None if pseudo_labels is None else pseudo_labels[positions], scores)


class Strategy:
    """Base class: higher score means query first.

    ``score(model, pool_loader, labeled_loader)`` returns a CPU tensor of shape ``(len(pool_loader.dataset),)``
    aligned with the pool loader's order; ``select`` returns a :class:`Selection` whose positions index that
    order. Both take ``reduce``, the sum over DDP ranks of quantities summed over the labeled set (the
    identity in one process), and ``progress`` (show a progress bar). Dict batches hold their targets under
    ``label_key`` (the loop sets it from the data module at setup). ``state_dict``/``load_state_dict`` hold
    whatever a strategy must keep across rounds to resume (nothing by default).

    The task (:attr:`task`, classification by default) is the data module's: the loop passes it to
    :meth:`use_task` at setup, which refuses a task outside :attr:`tasks` with :attr:`why_not`.
    """

    #: True where ``select`` needs the whole pool at once (joint batch selection); such strategies are
    #: run on the full pool by every rank under DDP instead of on a shard.
    joint: bool = False

    tasks: ClassVar[tuple[type[Task], ...]] = (Classification,)
    """The task types the strategy applies to (instances of a subclass too)."""
    why_not: ClassVar[str] = "it reads the logits as one softmax over the classes per sample, (batch, classes)"
    """Why it does not apply to any other task: the words after the colon of :meth:`check_task`'s refusal."""

    def __init__(self) -> None:
        self.label_key: str = LABEL_KEY
        self.task: Task = CLASSIFICATION

    def check_task(self, task: Task) -> None:
        """Raise a one-line :class:`~lightning_dynamical.errors.ConfigError` naming the strategy, the task and the
        reason when the strategy does not apply to ``task``."""
        if not isinstance(task, Task):
            raise ConfigError(f"{type(self).__name__} needs a Task (Classification(), MultiLabel(), "
                              f"Segmentation(), ...), got {task!r}")
        if not isinstance(task, self.tasks):
            raise ConfigError(f"{type(self).__name__} does not apply to the {task.name} task: {self.why_not}")

    def use_task(self, task: Task) -> None:
        """Score for ``task`` from now on (the loop calls it at setup with the data module's task); refused by
        :meth:`check_task`."""
        self.check_task(task)
        self.task = task

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], *,
              reduce: Reducer = identity, progress: bool = False) -> Tensor:
        raise NotImplementedError

    def select(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], query_size: int, *,
               reduce: Reducer = identity, progress: bool = False) -> Selection:
        """Top-``query_size`` positions by score; ties go to the earlier position (deterministic)."""
        scores = self.score(model, pool_loader, labeled_loader, reduce=reduce, progress=progress)
        return Selection.top(scores, query_size)

    def state_dict(self) -> dict[str, Any]:
        """What must survive a resume (nothing for a stateless strategy)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        return None

    def __repr__(self) -> str:
        # the default task is left out, any other comes last: reprs (recorded in al_state.json) read as before
        # tasks existed, and as DynamicAL's did with its task argument
        args = [f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k not in ("label_key", "task")]
        task = getattr(self, "task", CLASSIFICATION)
        return f"{type(self).__name__}({', '.join(args + ([] if task == CLASSIFICATION else [f'task={task!r}']))})"


def check_finite(scores: Tensor, positions: Tensor | None = None) -> Tensor:
    """Raise :class:`NonFiniteScoresError` naming how many scores are NaN or inf, with the first ten offenders'
    pool positions (``positions[i]`` is entry ``i``'s position in the pool loader's order; default ``i``)."""
    bad = (~torch.isfinite(scores.detach())).reshape(-1).nonzero().squeeze(1)
    if bad.numel():
        where = bad[:10].cpu() if positions is None else positions.reshape(-1)[bad[:10].to(positions.device)].cpu()
        raise NonFiniteScoresError(f"{bad.numel()} of {scores.numel()} pool scores are NaN or inf",
                                   [int(p) for p in where.tolist()])
    return scores


def top_b(scores: Tensor, query_size: int) -> Tensor:
    """Positions of the ``query_size`` largest scores, largest first, ties broken by position."""
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    return order[: min(query_size, scores.numel())]
