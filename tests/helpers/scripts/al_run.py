"""A tiny active-learning run for the kill -9 test: ``python al_run.py OUT [CKPT]``.

Digits, a small MLP with dropout (so the restored RNG matters), DynamicAL, 4 rounds, one thread. Prints
``fit-start`` when training is about to begin and ``checkpoint <seconds since then>`` at each round checkpoint,
so the test can time random kills.
"""

from __future__ import annotations

import sys
import time

import lightning as L
import torch
from torch import nn

from lightning_dynamical import ActiveLearningLoop, Classifier, DynamicAL
from tests.helpers.tiny import digits_datamodule, fit_loop


class Timeline(L.Callback):
    def on_fit_start(self, trainer, pl_module):
        self.start = time.monotonic()
        print("fit-start", flush=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        print(f"checkpoint {time.monotonic() - self.start:.3f}", flush=True)


def main(out: str, ckpt: str | None) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    dm = digits_datamodule(initial_size=30, seed=0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
    loop = ActiveLearningLoop(DynamicAL(), query_size=20, rounds=4, patience=2, max_epochs_per_round=3, dirpath=out,
                              verbose=False)
    fit_loop(Classifier(net), dm, loop, out, callbacks=[Timeline()], ckpt_path=ckpt)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
