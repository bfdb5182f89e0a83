"""When to stop labeling: stopping criteria for :class:`~lightning_dynamical.ActiveLearningLoop` (``stop=...``).

Each criterion looks at one round after its training (and, for score-based rules, after the round's pool
scoring) and says whether labeling should stop. The loop asks every criterion every round, reduces the
decisions over DDP ranks through ``trainer.strategy`` (a criterion fires if it fires on any rank; the
inputs are made identical on every rank first), records which criteria fired in the round records, and,
with ``stop_mode="stop"``, ends the run after that round without labeling its query.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from torch.utils.data import Subset

from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop.distributed import gather_shards, reduce_sum, shard
from lightning_dynamical.loop.evaluator import Evaluator
from lightning_dynamical.loop.pool_scorer import PoolScorer
from lightning_dynamical.strategies.base import Strategy
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.inference import probabilities
from lightning_dynamical.tasks.classification import Classification

Phase = Literal["train", "query"]
StopMode = Literal["stop", "record"]


class LoopView(Protocol):
    """What criteria read from :class:`~lightning_dynamical.ActiveLearningLoop` (declared here, so this module
    does not import the loop that imports it)."""

    round: int
    query_size: int
    strategy: Strategy
    evaluator: Evaluator
    scorer: PoolScorer

    @property
    def datamodule(self) -> ActiveLearningDataModule: ...


class RoundContext:
    """What a criterion may look at for the round that just trained; every value is the same on all ranks."""

    def __init__(self, trainer: Trainer, pl_module: LightningModule, loop: LoopView) -> None:
        self.trainer = trainer
        self.pl_module = pl_module
        self.loop = loop
        self.datamodule = loop.datamodule

    @property
    def round(self) -> int:
        return self.loop.round

    @property
    def labeled(self) -> int:
        return self.datamodule.num_labeled

    @property
    def query_size(self) -> int:
        return self.loop.query_size

    def predictions(self, indices: Sequence[int]) -> Tensor:
        """``argmax f(x)`` in eval mode for pool indices (evaluation transform); each rank predicts a shard."""
        trainer, dm = self.trainer, self.datamodule
        mine = shard(list(indices), trainer.global_rank, trainer.world_size)
        probs = probabilities(self.pl_module, dm.eval_loader(Subset(dm.splits.pool_eval, mine)), label_key=dm.label_key)
        local = probs.argmax(1) if probs.numel() else torch.zeros(0, dtype=torch.long)
        return gather_shards(trainer, local.double(), len(indices)).long()

    def val_accuracy(self) -> float:
        """Accuracy on the validation split in eval mode, reduced over ranks."""
        val = self.datamodule.val_dataset
        if val is None:
            raise ValueError("no validation split")
        return self.loop.evaluator.accuracy(self.trainer, self.pl_module, self.datamodule, val)

    def pool_sqnorm(self) -> Tensor:
        """``||g_u||^2`` of every pool sample DynamicAL scored this round, gathered from every rank's shard."""
        strategy = self.loop.strategy
        stats = strategy.last_statistics if isinstance(strategy, DynamicAL) else None
        if stats is None:
            raise RuntimeError("the strategy has not scored the pool this round")
        local = stats.sqnorm.double().cpu()
        if self.trainer.world_size == 1 or not self.loop.scorer.sharded:
            return local
        device = self.trainer.strategy.root_device
        total = int(reduce_sum(self.trainer, torch.tensor([float(local.numel())], device=device)).item())
        return gather_shards(self.trainer, local, total)


class StoppingCriterion(ABC):
    """One stopping rule with a small, plain ``state_dict``.

    ``phase`` says when it is asked: ``"train"`` right after a round's training, ``"query"`` after the
    round's pool has been scored (before anything is labeled). ``value`` is this round's statistic (logged
    as ``al/stop/<name>``) and ``message`` says why it fired.
    """

    name: str = "criterion"
    phase: Phase = "train"

    def __init__(self) -> None:
        self.value: float | None = None
        self.message = ""

    def setup(self, loop: LoopView) -> None:
        """Check that the criterion can work with this loop (raise before training starts)."""
        return None

    @abstractmethod
    def update(self, ctx: RoundContext) -> bool:
        """Look at one round; True when labeling should stop (``message`` says why)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._args().items())})"

    def _args(self) -> dict[str, Any]:
        return {}


class LabelBudget(StoppingCriterion):
    """Stop when another query of ``query_size`` would take the labeled set past ``max_labels``.

    Args:
        max_labels: the most labels you will pay for, the initial set included.
    """

    name = "budget"

    def __init__(self, max_labels: int) -> None:
        super().__init__()
        if not isinstance(max_labels, int) or isinstance(max_labels, bool) or max_labels <= 0:
            raise ValueError(f"LabelBudget(max_labels=...) must be a positive int, got {max_labels!r}")
        self.max_labels = max_labels

    def update(self, ctx: RoundContext) -> bool:
        self.value = float(ctx.labeled)
        if ctx.labeled + ctx.query_size <= self.max_labels:
            return False
        self.message = (f"label budget: {ctx.labeled} labeled, another {ctx.query_size} would exceed "
                        f"max_labels={self.max_labels}")
        return True

    def _args(self) -> dict[str, Any]:
        return {"max_labels": self.max_labels}


def cohen_kappa(a: Tensor, b: Tensor) -> float:
    """Cohen's kappa between two label vectors: agreement corrected for the agreement expected by chance.

    Two identical constant vectors agree perfectly (kappa 1), although chance agreement is then 1 too.
    """
    if a.shape != b.shape or a.dim() != 1 or a.numel() == 0:
        raise ValueError(f"need two non-empty label vectors of one length, got shapes {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a, b = a.long().cpu(), b.long().cpu()
    observed = float((a == b).double().mean())
    classes = int(max(int(a.max()), int(b.max()))) + 1
    pa = torch.bincount(a, minlength=classes).double() / a.numel()
    pb = torch.bincount(b, minlength=classes).double() / b.numel()
    expected = float((pa * pb).sum())
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


class StabilizingPredictions(StoppingCriterion):
    """Stop when successive rounds' models agree on a fixed stop set (Bloodgood & Vijay-Shanker, 2009).

    The stop set is ``stop_set_size`` pool samples drawn once with ``seed`` (validation samples excluded;
    labeled ones may be in it, as labels do not enter the comparison). After each round the model predicts
    them in eval mode; the criterion fires once Cohen's kappa between consecutive rounds' predictions is at
    least ``threshold`` for ``rounds`` consecutive comparisons.

    Args:
        threshold: kappa that counts as agreement.
        rounds: consecutive agreeing comparisons needed (k).
        stop_set_size: samples in the stop set (the whole pool if it is smaller).
        seed: draws the stop set.
    """

    name = "kappa"

    def __init__(self, threshold: float = 0.99, rounds: int = 3, stop_set_size: int = 1000, seed: int = 0) -> None:
        super().__init__()
        if not -1 <= threshold <= 1:
            raise ValueError(f"StabilizingPredictions(threshold=...) must be in [-1, 1], got {threshold}")
        if not isinstance(rounds, int) or rounds <= 0:
            raise ValueError(f"StabilizingPredictions(rounds=...) must be a positive int, got {rounds!r}")
        if not isinstance(stop_set_size, int) or stop_set_size <= 0:
            raise ValueError(f"StabilizingPredictions(stop_set_size=...) must be a positive int, got {stop_set_size!r}")
        self.threshold = threshold
        self.rounds = rounds
        self.stop_set_size = stop_set_size
        self.seed = seed
        self.stop_set: list[int] = []
        self.previous: list[int] | None = None
        self.kappas: list[float] = []

    def setup(self, loop: LoopView) -> None:
        if not isinstance(loop.datamodule.task, Classification):
            raise ConfigError(f"StabilizingPredictions compares one predicted class per sample between rounds; the "
                              f"{loop.datamodule.task.name} task has no single class per sample")

    def update(self, ctx: RoundContext) -> bool:
        if not self.stop_set:
            candidates = ctx.datamodule.state_dict()["candidates"]
            order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(self.seed))
            self.stop_set = sorted(candidates[i] for i in order[: self.stop_set_size].tolist())
        current = ctx.predictions(self.stop_set)
        if self.previous is not None:
            self.kappas.append(cohen_kappa(torch.tensor(self.previous), current))
            self.value = self.kappas[-1]
        self.previous = current.tolist()
        recent = self.kappas[-self.rounds:]
        if len(recent) < self.rounds or min(recent) < self.threshold:
            return False
        self.message = (f"stabilising predictions: kappa {', '.join(f'{k:.4f}' for k in recent)} >= "
                        f"{self.threshold} for {self.rounds} rounds on {len(self.stop_set)} stop-set samples")
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"stop_set": list(self.stop_set), "previous": self.previous, "kappas": list(self.kappas)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stop_set = [int(i) for i in state["stop_set"]]
        self.previous = None if state["previous"] is None else [int(y) for y in state["previous"]]
        self.kappas = [float(k) for k in state["kappas"]]
        self.value = self.kappas[-1] if self.kappas else None

    def _args(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "rounds": self.rounds, "stop_set_size": self.stop_set_size,
                "seed": self.seed}


class ValidationPlateau(StoppingCriterion):
    """Stop when validation accuracy has not improved on its best by more than ``min_delta`` for
    ``patience`` rounds. Needs a validation split (``val`` or ``val_size`` on the DataModule).

    Args:
        patience: rounds without improvement.
        min_delta: accuracy gain that counts as improvement.
    """

    name = "val_plateau"

    def __init__(self, patience: int = 2, min_delta: float = 0.0) -> None:
        super().__init__()
        if not isinstance(patience, int) or patience <= 0:
            raise ValueError(f"ValidationPlateau(patience=...) must be a positive int, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"ValidationPlateau(min_delta=...) must be >= 0, got {min_delta}")
        self.patience = patience
        self.min_delta = min_delta
        self.best = -math.inf
        self.wait = 0

    def setup(self, loop: LoopView) -> None:
        if loop.datamodule.val_dataset is None:
            raise ValueError("ValidationPlateau needs a validation split: give the DataModule a val dataset or "
                             "val_size > 0")

    def update(self, ctx: RoundContext) -> bool:
        accuracy = ctx.val_accuracy()
        self.value = accuracy
        if accuracy > self.best + self.min_delta:
            self.best, self.wait = accuracy, 0
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        self.message = (f"validation accuracy plateau: best {self.best:.4f}, not improved by more than "
                        f"{self.min_delta} for {self.patience} rounds")
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.value = state.get("value")

    def _args(self) -> dict[str, Any]:
        return {"patience": self.patience, "min_delta": self.min_delta}


class GradientNormDecay(StoppingCriterion):
    """dynamicAL's own signal: stop when the mean of the top-b ``||g_u||^2`` over the scored pool falls below
    ``fraction`` of its first-round value.

    ``||g_u||^2`` is the squared norm of a pool sample's pseudo-label gradient, which DynamicAL computes
    for every ``gamma`` (also 0 and ``inf``); a small top-b mean says no unlabeled sample would move the
    model much. Asked after the round's scoring, so a firing round labels nothing. Needs a DynamicAL strategy.

    Args:
        fraction: ratio to the first round's value below which it fires.
    """

    name = "gradient_norm"
    phase: Phase = "query"

    def __init__(self, fraction: float = 0.1) -> None:
        super().__init__()
        if not 0 < fraction < 1:
            raise ValueError(f"GradientNormDecay(fraction=...) must be in (0, 1), got {fraction}")
        self.fraction = fraction
        self.reference: float | None = None

    def setup(self, loop: LoopView) -> None:
        if not isinstance(loop.strategy, DynamicAL):
            raise TypeError(f"GradientNormDecay reads DynamicAL's ||g_u||^2; the strategy is "
                            f"{type(loop.strategy).__name__}")

    def update(self, ctx: RoundContext) -> bool:
        sqnorm = ctx.pool_sqnorm()
        b = min(ctx.query_size, sqnorm.numel())
        if b == 0:
            return False
        top = float(sqnorm.topk(b).values.mean())
        if self.reference is None:
            self.reference = top
        self.value = top / self.reference if self.reference > 0 else 0.0
        if self.value >= self.fraction:
            return False
        self.message = (f"gradient norm decay: mean top-{b} ||g_u||^2 = {top:.4g} is {self.value:.4f} of the "
                        f"first round's {self.reference:.4g} (< {self.fraction})")
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reference = None if state["reference"] is None else float(state["reference"])
        self.value = state.get("value")

    def _args(self) -> dict[str, Any]:
        return {"fraction": self.fraction}


class Stopping:
    """The loop's criteria: asks them, agrees over ranks, records what fired, holds their state.

    Args:
        criteria: one criterion, several, or ``None``.
        mode: ``"stop"`` ends the run when one fires; ``"record"`` only records it (benchmarks).
    """

    def __init__(self, criteria: StoppingCriterion | Sequence[StoppingCriterion] | None,
                 mode: StopMode = "stop") -> None:
        items = [] if criteria is None else [criteria] if isinstance(criteria, StoppingCriterion) else list(criteria)
        bad = [type(c).__name__ for c in items if not isinstance(c, StoppingCriterion)]
        if bad:
            raise TypeError(f"stop must be StoppingCriterion objects (LabelBudget, StabilizingPredictions, "
                            f"ValidationPlateau, GradientNormDecay), got {bad}")
        names = [c.name for c in items]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"stop has more than one criterion named {repeated}; give each kind once")
        if mode not in ("stop", "record"):
            raise ValueError(f"stop_mode must be 'stop' or 'record', got {mode!r}")
        self.criteria = items
        self.mode = mode
        self.messages: list[str] = []

    @property
    def enforce(self) -> bool:
        return self.mode == "stop"

    def setup(self, loop: LoopView) -> None:
        for criterion in self.criteria:
            criterion.setup(loop)

    def check(self, trainer: Trainer, pl_module: LightningModule, loop: LoopView, row: dict[str, Any],
              phase: Phase) -> bool:
        """Ask this phase's criteria about the round in ``row``; add their names to ``row["stopped_by"]`` when
        they fire (the same on every rank). True when the run should stop now."""
        asked = [c for c in self.criteria if c.phase == phase]
        row.setdefault("stopped_by", "")
        if phase == "train":
            self.messages = []
        if not asked:
            return False
        ctx = RoundContext(trainer, pl_module, loop)
        flags = torch.tensor([float(c.update(ctx)) for c in asked], device=trainer.strategy.root_device)
        flags = reduce_sum(trainer, flags).cpu()
        fired = [c for c, f in zip(asked, flags.tolist()) if f > 0]
        row["stopped_by"] = ";".join([n for n in row["stopped_by"].split(";") if n] + [c.name for c in fired])
        self.messages += [c.message or c.name for c in fired]
        return bool(fired) and self.enforce

    def end_line(self, row: dict[str, Any], unlabeled: int, rounds: int) -> str | None:
        """Why the run ends after the round in ``row``, when it ends early: a criterion fired (and is enforced)
        or the pool is empty."""
        if row.get("stopped_by") and self.enforce:
            return f"[active learning] stopping after round {row['round']}: " + "; ".join(self.messages)
        if unlabeled == 0 and row["round"] < rounds:
            return f"[active learning] the pool is empty after round {row['round']}: stopping"
        return None

    def metrics(self) -> dict[str, float]:
        """This round's statistic of each criterion, for the loggers."""
        return {f"al/stop/{c.name}": float(c.value) for c in self.criteria if c.value is not None}

    def state_dict(self) -> dict[str, Any]:
        return {c.name: c.state_dict() for c in self.criteria}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        for criterion in self.criteria:
            if state is not None and criterion.name in state:
                criterion.load_state_dict(state[criterion.name])
