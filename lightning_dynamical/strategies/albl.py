"""ALBL (Hsu & Lin 2015): an EXP4.P bandit that learns which query strategy to use each round."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from lightning_dynamical.errors import ConfigError
from lightning_dynamical.records import rng
from lightning_dynamical.strategies.base import Reducer, Selection, Strategy, identity
from lightning_dynamical.strategies.coreset import Coreset
from lightning_dynamical.strategies.random import Random
from lightning_dynamical.strategies.uncertainty import Entropy
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import (
    Inputs,
    batch_inputs,
    batch_size,
    batch_targets,
    evaluation,
    forward_logits,
    model_device_dtype,
    to_model,
)


class Exp4P:
    """EXP4.P (Beygelzimer et al. 2011) with one expert per arm, as ALBL runs it over strategies.

    ``p = (1 - K p_min) w / sum(w) + p_min``; after arm ``j`` earns ``r`` in ``[0, 1]`` every arm ``i``
    gets ``log w_i += p_min / 2 * (r_hat_i + sqrt(ln(K / delta) / (K T)) / p_i)`` with
    ``r_hat_i = r / p_j`` if ``i = j`` else 0. Log-weights avoid overflow.

    Args:
        n_arms: number of arms ``K``.
        horizon: expected number of rounds ``T``.
        p_min: probability floor of every arm; default ``min(1/K, sqrt(ln K / (K T)))`` (EXP4.P's choice).
        delta: confidence parameter of the variance bonus.
    """

    def __init__(
        self, n_arms: int, horizon: int = 20, p_min: float | None = None, delta: float = 0.1
    ) -> None:
        if n_arms < 1 or horizon < 1 or not 0 < delta <= 1:
            raise ConfigError(f"Need n_arms >= 1, horizon >= 1, 0 < delta <= 1; got {n_arms}, {horizon}, "
                             f"{delta}")
        default = min(1 / n_arms, math.sqrt(math.log(n_arms) / (n_arms * horizon)))
        self.p_min = default if p_min is None else float(p_min)
        if not 0 <= self.p_min <= 1 / n_arms:
            raise ConfigError(f"p_min must lie in [0, 1/{n_arms}], got {self.p_min}")
        self.bonus = math.sqrt(math.log(n_arms / delta) / (n_arms * horizon))
        self.log_weights = torch.zeros(n_arms, dtype=torch.float64)

    def probabilities(self) -> Tensor:
        """``(K,)`` probabilities of drawing each arm."""
        k = self.log_weights.numel()
        return (1 - k * self.p_min) * self.log_weights.softmax(0) + self.p_min

    def update(self, arm: int, reward: float) -> None:
        """Credit ``reward`` to ``arm``, the arm drawn from the current :meth:`probabilities`."""
        p = self.probabilities()
        r_hat = torch.zeros_like(p)
        r_hat[arm] = reward / p[arm]
        self.log_weights += self.p_min / 2 * (r_hat + self.bonus / p)


def fingerprint(x: Inputs) -> Tensor:
    """``(B,)`` int64 hash of each sample's bytes: identifies a sample across loaders without indices."""
    b = batch_size(x)
    if b == 0:
        return torch.zeros(0, dtype=torch.long)
    if isinstance(x, dict):
        parts = [v for _, v in sorted(x.items()) if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == b]
    else:
        parts = list(x) if isinstance(x, tuple) else [x]
    rows = [t.detach().cpu().contiguous().reshape(b, -1).view(torch.uint8).numpy() for t in parts]
    return torch.tensor([int.from_bytes(hashlib.blake2b(b"".join(r[i].tobytes() for r in rows),
                                                        digest_size=8).digest(), "little", signed=True)
                         for i in range(b)], dtype=torch.long)


class ALBL(Strategy):
    """Active learning by learning: each round an EXP4.P bandit draws one strategy, which makes the query.

    Reward (given at the start of the next ``select``, once the queried samples are labeled and the model
    retrained): the importance-weighted accuracy of the model on the labeled set,
    ``sum_i w_i [f(x_i) = y_i] / sum_i w_i``, where ``w_i = 1 / q_i`` for a sample queried by a strategy
    drawn with probability ``q_i`` and 1 for samples this instance did not query (the initial set). This is
    Hsu & Lin's IW-ACC, self-normalised to stay in ``[0, 1]`` as EXP4.P requires.

    ``select`` only sees loaders, so queried samples are recognised by a hash of their input bytes
    (:func:`fingerprint`): the labeled loader must yield the same input tensors as the pool loader did
    (the evaluation transform, no augmentation); its order, shuffling and sharding do not matter (sums go
    through ``reduce``). A warning is raised when none of last round's samples is found.
    The draw uses a generator seeded by ``seed`` and the round, so the choice is identical on every rank.
    ``state_dict``/``load_state_dict`` hold the bandit and the query record for resuming; save after
    ``select``.

    Args:
        strategies: the arms; default ``[Entropy(), Coreset(seed), Random(seed)]`` (uncertainty,
            representativeness and random).
        seed: seed of the bandit draws and of the default strategies.
        horizon: EXP4.P's expected number of rounds ``T`` (see :class:`Exp4P`).
        p_min: EXP4.P's probability floor of every arm (``None``: EXP4.P's choice).
        delta: EXP4.P's confidence parameter of the variance bonus.
    """

    joint = True
    why_not = "its reward is the accuracy of one class index per sample on the labeled set"

    def __init__(
        self,
        strategies: list[Strategy] | None = None,
        seed: int = 0,
        horizon: int = 20,
        p_min: float | None = None,
        delta: float = 0.1,
    ) -> None:
        super().__init__()
        self.seed = int(seed)
        self.strategies = list(strategies) if strategies is not None else [
            Entropy(), Coreset(seed=self.seed), Random(seed=self.seed)]
        if not self.strategies:
            raise ConfigError("ALBL needs at least one strategy")
        self.horizon, self.p_min, self.delta = horizon, p_min, delta
        self._bandit = Exp4P(len(self.strategies), horizon, p_min, delta)
        self._round = 0
        self._last_choice: int | None = None
        self._last_count = 0
        self._fingerprints = torch.zeros(0, dtype=torch.long)
        self._query_probs = torch.zeros(0, dtype=torch.float64)
        self._last_strategy: Strategy | None = None
        self._last_reward: float | None = None

    def use_task(self, task: Task) -> None:
        """The task of ALBL and of each of its strategies (ALBL applies to classification only)."""
        super().use_task(task)
        for strategy in self.strategies:
            strategy.use_task(task)

    @property
    def last_strategy(self) -> Strategy | None:
        """The strategy that made the latest query (for logging)."""
        return self._last_strategy

    @property
    def last_reward(self) -> float | None:
        """The reward credited at the start of the latest ``select`` (``None`` before any)."""
        return self._last_reward

    @property
    def probabilities(self) -> Tensor:
        """Current probability of drawing each strategy."""
        return self._bandit.probabilities()

    def score(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], *,
              reduce: Reducer = identity, progress: bool = False) -> Tensor:
        """Scores of the currently most probable strategy (no draw, no bandit update)."""
        strategy = self._prepared(int(torch.argmax(self.probabilities)))
        return strategy.score(model, pool_loader, labeled_loader, reduce=reduce, progress=progress)

    def select(self, model: nn.Module, pool_loader: Any, labeled_loader: Iterable[Any], query_size: int, *,
               reduce: Reducer = identity, progress: bool = False) -> Selection:
        if self._last_choice is not None:
            self._last_reward = self._reward(model, labeled_loader, reduce)
            if self._last_reward is not None:
                self._bandit.update(self._last_choice, self._last_reward)
        probs = self.probabilities
        choice = int(torch.multinomial(probs, 1, generator=rng.generator(self.seed, self._round)))
        strategy = self._prepared(choice)
        selection = strategy.select(model, pool_loader, labeled_loader, query_size, reduce=reduce, progress=progress)
        queried = self._pool_fingerprints(pool_loader, selection.positions)
        self._fingerprints = torch.cat([self._fingerprints, queried])
        self._query_probs = torch.cat([self._query_probs, probs[choice].repeat(queried.numel())])
        self._last_choice, self._last_count, self._round = choice, queried.numel(), self._round + 1
        self._last_strategy = strategy
        return selection

    def state_dict(self) -> dict[str, Any]:
        """Bandit weights, round counter, last choice and the queried-sample record (plain types/tensors)."""
        return {
            "log_weights": self._bandit.log_weights.clone(),
            "round": self._round,
            "last_choice": -1 if self._last_choice is None else self._last_choice,
            "last_count": self._last_count,
            "fingerprints": self._fingerprints.clone(),
            "query_probs": self._query_probs.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the number of strategies must match."""
        log_weights = torch.as_tensor(state["log_weights"], dtype=torch.float64)
        if log_weights.shape != self._bandit.log_weights.shape:
            raise ValueError(f"State has {log_weights.numel()} strategies, this ALBL has "
                             f"{len(self.strategies)}")
        self._bandit.log_weights = log_weights.clone()
        self._round = int(state["round"])
        self._last_choice = None if int(state["last_choice"]) < 0 else int(state["last_choice"])
        self._last_count = int(state["last_count"])
        self._fingerprints = torch.as_tensor(state["fingerprints"], dtype=torch.long).clone()
        self._query_probs = torch.as_tensor(state["query_probs"], dtype=torch.float64).clone()

    def _prepared(self, index: int) -> Strategy:
        """The strategy at ``index``, reading dict batches' targets under this instance's ``label_key``."""
        strategy = self.strategies[index]
        strategy.label_key = self.label_key
        return strategy

    def _pool_fingerprints(self, pool_loader: Any, positions: Tensor, chunk: int = 256) -> Tensor:
        """Fingerprints of the pool samples at ``positions``, collated as the pool loader collates them."""
        collate = getattr(pool_loader, "collate_fn", None) or default_collate
        idx = positions.tolist()
        parts = [fingerprint(batch_inputs(collate([pool_loader.dataset[i] for i in idx[s : s + chunk]]),
                                          self.label_key))
                 for s in range(0, len(idx), chunk)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def _reward(self, model: nn.Module, labeled_loader: Iterable[Any], reduce: Reducer) -> float | None:
        """Importance-weighted accuracy on the labeled set (``None`` when it is empty on every rank)."""
        weight_of = dict(zip(self._fingerprints.tolist(), self._query_probs.reciprocal().tolist()))
        last = set(self._fingerprints[self._fingerprints.numel() - self._last_count:].tolist())
        num = den = found = 0.0
        with evaluation(model), torch.no_grad():
            for batch in labeled_loader:
                x, y = batch_inputs(batch, self.label_key), batch_targets(batch, self.label_key)
                if y.ndim != 1:
                    raise ValueError(f"ALBL needs class indices (batch,) as targets, got {tuple(y.shape)}")
                pred = forward_logits(model, to_model(x, model)).argmax(1).cpu()
                keys = fingerprint(x).tolist()
                w = torch.tensor([weight_of.get(k, 1.0) for k in keys], dtype=torch.float64)
                num += float((w * (pred == y.cpu()).double()).sum())
                den += float(w.sum())
                found += sum(k in last for k in keys)
        device = model_device_dtype(model)[0]
        num, den, found = reduce(torch.tensor([num, den, found], dtype=torch.float64, device=device)).tolist()
        if self._last_count and not found:
            warnings.warn("ALBL found none of last round's queried samples in the labeled loader (do its "
                          "inputs differ from the pool loader's, e.g. augmented?); they count with weight 1",
                          stacklevel=3)
        return num / den if den > 0 else None
