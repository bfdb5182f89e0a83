"""Hugging Face style use, with no adapter code: dict batches, ``ModelOutput`` logits, every strategy."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_dynamical import (
    ALBL,
    BADGE,
    BALD,
    ActiveLearningDataModule,
    ActiveLearningLoop,
    Coreset,
    DynamicAL,
    Entropy,
    LeastConfidence,
    Margin,
    Random,
)
from tests.helpers.brute_force import any_per_sample_grads
from tests.helpers.hf_text import HFClassifier, TokenDataset, token_datamodule
from tests.helpers.tiny import fit_loop, read_csv

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

STRATEGIES = {
    "dynamical": lambda: DynamicAL(),
    "dynamical_greedy": lambda: DynamicAL(greedy_chunks=2),
    "random": lambda: Random(seed=0),
    "entropy": Entropy,
    "margin": Margin,
    "least_confidence": LeastConfidence,
    "bald": lambda: BALD(mc_samples=3),
    "badge": BADGE,
    "coreset": Coreset,
    "albl": lambda: ALBL([Entropy(), Random(seed=1)]),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_runs_on_dict_batches(name, tmp_path):
    L.seed_everything(0)
    dm = token_datamodule(48, 12, initial_size=9, batch_size=8, eval_batch_size=16)
    loop = ActiveLearningLoop(STRATEGIES[name](), query_size=6, rounds=1, max_epochs_per_round=1, dirpath=str(tmp_path),
                              save_round_checkpoints=False, verbose=False)
    fit_loop(HFClassifier(), dm, loop, tmp_path)
    assert dm.num_labeled == 15
    rows = read_csv(tmp_path / "al_rounds.csv")
    assert [int(r["labeled"]) for r in rows] == [9, 15]
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 for r in rows)


def test_raw_bert_and_dict_loaders_score_exactly():
    torch.manual_seed(0)
    model = HFClassifier().model.double()
    pool, labeled = TokenDataset(7, 2), TokenDataset(4, 3)
    pool_loader, labeled_loader = DataLoader(pool, batch_size=3), DataLoader(labeled, batch_size=3)
    scores = DynamicAL(gamma=2.0).score(model, pool_loader, labeled_loader)
    model.eval()
    everything = next(iter(DataLoader(pool, batch_size=7)))
    g = any_per_sample_grads(model, {k: v for k, v in everything.items() if k != "labels"})
    lab = next(iter(DataLoader(labeled, batch_size=4)))
    g_s = any_per_sample_grads(model, {k: v for k, v in lab.items() if k != "labels"}, lab["labels"]).sum(0)
    ref = g.pow(2).sum(1) + 2 * g @ g_s
    assert float((scores - ref).abs().max() / ref.abs().max()) <= 1e-8


def test_label_key_is_configurable(tmp_path):
    class Renamed(TokenDataset):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            return {"input_ids": item["input_ids"], "attention_mask": item["attention_mask"],
                    "target": item["labels"]}

    class Module(HFClassifier):
        def training_step(self, batch, batch_idx):
            labels = batch.pop("target")
            return torch.nn.functional.cross_entropy(self(**batch).logits, labels)

    L.seed_everything(0)
    dm = ActiveLearningDataModule(Renamed(30, 0), test=Renamed(9, 1), initial_size=6, batch_size=8, label_key="target")
    loop = ActiveLearningLoop(DynamicAL(), query_size=3, rounds=1, max_epochs_per_round=1, dirpath=str(tmp_path),
                              save_round_checkpoints=False, verbose=False)
    fit_loop(Module(), dm, loop, tmp_path)
    assert dm.num_labeled == 9
