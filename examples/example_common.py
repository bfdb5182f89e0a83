"""Pieces both examples share: a per-round wall clock and the strategy chosen on the command line."""

from __future__ import annotations

import time

from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_dynamical import ActiveLearningLoop, DynamicAL, Entropy, Random, Strategy


class RoundClock(Callback):
    """Wall seconds from the start of ``fit`` to the end of each active-learning round."""

    def __init__(self, loop: ActiveLearningLoop) -> None:
        self.loop = loop
        self.times: list[float] = []
        self.start = time.perf_counter()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        while len(self.times) < len(self.loop.history):
            self.times.append(time.perf_counter() - self.start)


def make_strategy(name: str, gamma: float, seed: int) -> Strategy:
    """dynamicAL, or a baseline to compare it with."""
    return {"dynamical": lambda: DynamicAL(gamma=gamma), "random": lambda: Random(seed=seed),
            "entropy": Entropy}[name]()
