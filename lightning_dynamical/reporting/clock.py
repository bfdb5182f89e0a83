"""Wall time per active-learning round, for benchmarks and examples."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_dynamical.loop.callback import ActiveLearningLoop


class RoundClock(Callback):
    """Seconds from the start of ``fit`` to the end of each round of ``loop`` (``times``, one per finished round).

    With a tqdm ``bar`` it also ticks the bar once per round, showing the round's labeled size and test accuracy.
    """

    def __init__(self, loop: ActiveLearningLoop, bar: Any = None) -> None:
        self.loop = loop
        self.bar = bar
        self.times: list[float] = []
        self._start = time.perf_counter()

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        while len(self.times) < len(self.loop.history):
            row = self.loop.history[len(self.times)]
            self.times.append(round(time.perf_counter() - self._start, 3))
            if self.bar is not None:
                name, value = f"test_{row.get('metric') or 'acc'}", row.get("test_metric", row["test_acc"])
                self.bar.set_postfix({"labeled": row["labeled"], name: f"{value:.4f}"})
                self.bar.update(1)
