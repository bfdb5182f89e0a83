"""Writes the files in this folder with lightning_dynamical as of commit a374e385 (2026-11-25, before the loop
was split into parts), so ``tests/records/test_old_checkpoints.py`` can check that today's code still resumes them.

Run it against that version, from the repository root::

    git worktree add --detach /tmp/old-ld a374e385
    PYTHONPATH=/tmp/old-ld python tests/records/v0_checkpoints/make.py

It rewrites two folders (a few KB per file):

``run/``
    DynamicAL, the data set's own labels, 3 rounds of 5 queries: ``al_round_0..2.ckpt``, the final
    ``al_state.json`` and ``al_rounds.csv``, ``al_state_round_<k>.json`` (``al_state.json`` as it was when round
    ``k`` started: what a run interrupted in round ``k`` leaves) and ``mid_round_1.ckpt`` (saved after the first
    epoch of round 1, as a ``ModelCheckpoint`` or an interrupt would).
``paused/``
    Random with a ``FileOracle``, 2 rounds: round 0's labels were filled in and collected; round 1 paused with
    its labels pending: ``al_pending_round_1.ckpt``, ``al_state.json``, ``al_rounds.csv`` and
    ``queries/queries_round_<k>.csv`` (+ ``.json`` manifest), round 1's filled in with the true labels afterwards.

:func:`tiny_data` and :class:`TinyNet` use torch only, so the tests build the same pool and network.
Do not change them: the committed checkpoints hold this network's weights and this pool's indices.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

HERE = Path(__file__).resolve().parent
QUERY_SIZE = 5
INITIAL_SIZE = 10


def tiny_data() -> tuple[TensorDataset, TensorDataset]:
    """A pool of 60 and a test set of 30 samples: 8 features, 3 classes separated by their means."""
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(3, 8, generator=gen) * 2

    def part(n: int) -> TensorDataset:
        y = torch.arange(n) % 3
        return TensorDataset(means[y] + torch.randn(n, 8, generator=gen), y)

    return part(60), part(30)


class TinyNet(nn.Sequential):
    """8 -> 16 -> BatchNorm -> ReLU -> 3: a few hundred parameters and BatchNorm buffers."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def main() -> None:
    import lightning as L

    from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, DynamicAL, Random
    from lightning_dynamical.oracles.base import FileOracle

    class Snapshots(L.Callback):
        """Copies ``al_state.json`` as each round starts; saves ``mid_round_1.ckpt`` after round 1's first epoch."""

        def __init__(self, loop: ActiveLearningLoop, folder: Path) -> None:
            self.loop, self.folder, self.seen = loop, folder, -1

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if self.loop.round != self.seen:
                self.seen = self.loop.round
                shutil.copy(self.folder / "al_state.json", self.folder / f"al_state_round_{self.seen}.json")

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if self.loop.round == 1 and self.loop.convergence.epochs == 1:
                trainer.save_checkpoint(self.folder / "mid_round_1.ckpt")

    def fit(folder: Path, loop: ActiveLearningLoop, extra: list[L.Callback], ckpt_path: str | None = None) -> None:
        L.seed_everything(0)
        pool, test = tiny_data()
        dm = ActiveLearningDataModule(pool, None, test, initial_size=INITIAL_SIZE, batch_size=10, seed=0)
        trainer = L.Trainer(max_epochs=-1, callbacks=[loop, *extra], logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=folder)
        trainer.fit(Classifier(TinyNet(), num_classes=3, optimizer="sgd", lr=0.1), datamodule=dm, ckpt_path=ckpt_path)

    def loop(folder: Path, strategy: object, rounds: int, **kwargs: object) -> ActiveLearningLoop:
        return ActiveLearningLoop(strategy, query_size=QUERY_SIZE, rounds=rounds, patience=2, max_epochs_per_round=3,
                                  dirpath=str(folder), verbose=False, **kwargs)

    def fill(csv_path: Path) -> None:
        """Put the true label of each queried sample into the CSV's ``label`` column, as a person would."""
        pool, _ = tiny_data()
        with csv_path.open() as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            row["label"] = str(int(pool[int(row["index"])][1]))
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

    run, paused = HERE / "run", HERE / "paused"
    for folder in (run, paused):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()

    active = loop(run, DynamicAL(), rounds=3)
    fit(run, active, [Snapshots(active, run)])

    oracle = FileOracle(str(paused / "queries"), num_classes=3)
    fit(paused, loop(paused, Random(), rounds=2, oracle=oracle), [])
    fill(paused / "queries" / "queries_round_0.csv")
    fit(paused, loop(paused, Random(), rounds=2, oracle=oracle), [], str(paused / "al_pending_round_0.ckpt"))
    (paused / "al_pending_round_0.ckpt").unlink()
    fill(paused / "queries" / "queries_round_1.csv")
    for name in sorted(p.name for p in (*run.iterdir(), *paused.iterdir())):
        print(name, file=sys.stderr)


if __name__ == "__main__":
    main()
