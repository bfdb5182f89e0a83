"""dynamicAL on WikiANN named-entity recognition with a small transformer tagger built from its arguments.

Batches are dicts (``input_ids``, ``attention_mask``, ``labels``: a tag per token, -100 at padding); the vocabulary is
built from the pool sentences. Each round prints the labeled sentences, token accuracy and entity-level F1 on the test
sentences. Run from the repository root (the data is ``<root>/wikiann/en/{train,test}``):

    python examples/ner.py --root ../shared/data

The same run through the CLI: ``lightning-dynamical fit --config configs/wikiann_ner.yaml``.
"""

from __future__ import annotations

import argparse

import torch
from example_common import make_strategy
from lightning.pytorch import Trainer, seed_everything

from lightning_dynamical import ActiveLearningLoop, Classifier
from lightning_dynamical.data import WikiANNNERDataModule
from lightning_dynamical.data.wikiann import TAGS
from lightning_dynamical.models import TokenTagger
from lightning_dynamical.reporting.clock import RoundClock


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data", help="folder holding wikiann/en/train and wikiann/en/test")
    p.add_argument("--pool-size", type=int, default=4000, help="train sentences in the pool (seeded subset)")
    p.add_argument("--test-size", type=int, default=2000, help="test sentences (seeded subset)")
    p.add_argument("--initial-size", type=int, default=200, help="M")
    p.add_argument("--query-size", type=int, default=200, help="b")
    p.add_argument("--rounds", type=int, default=4, help="R")
    p.add_argument("--strategy", choices=["dynamical", "random", "entropy"], default="dynamical")
    p.add_argument("--gamma", type=float, default=2.0, help="dynamicAL's gamma")
    p.add_argument("--max-epochs-per-round", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (a tiny model gains little from more)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/ner")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    dm = WikiANNNERDataModule(root=args.root, pool_size=args.pool_size, test_size=args.test_size, vocab_size=8000,
                              max_length=32, initial_size=args.initial_size, batch_size=32, seed=args.seed)
    net = TokenTagger(vocab_size=dm.vocab_size, num_tags=len(TAGS), max_length=dm.max_length, dim=64, depth=1,
                      heads=4, dropout=0.1)
    model = Classifier(net, num_classes=len(TAGS), lr=3e-3, weight_decay=1e-4)
    loop = ActiveLearningLoop(make_strategy(args.strategy, args.gamma, args.seed), query_size=args.query_size,
                              rounds=args.rounds, train_acc_threshold=0.99,
                              max_epochs_per_round=args.max_epochs_per_round, seed=args.seed, dirpath=args.out,
                              save_round_checkpoints=False, verbose=False)
    clock = RoundClock(loop)
    trainer = Trainer(max_epochs=-1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=args.out,
                      callbacks=[loop, clock])
    trainer.fit(model, datamodule=dm)
    print(f"{args.strategy} on WikiANN NER: pool {args.pool_size}, test {args.test_size} sentences, vocabulary "
          f"{len(dm.splits.pool.vocabulary)} ids")
    print("| round | labeled | token acc | entity F1 | epochs | score_s | wall_s |\n|---|---|---|---|---|---|---|")
    for row, wall in zip(loop.history, clock.times):
        print(f"| {row['round']} | {row['labeled']} | {row['test_acc']:.4f} | {row['test_metric']:.4f} | "
              f"{row['epochs']} | {row['score_seconds']:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
