"""dynamicAL on real AG News items with a small transformer built from its arguments (nothing downloaded).

Batches are dicts (``input_ids``, ``attention_mask``, ``labels``), as Hugging Face models take them; the
vocabulary is built from the pool texts. Run from the repository root (the data is ``<root>/ag_news/test.csv``):

    python examples/text_classifier.py --root ../shared/data

The same run through the CLI: ``lightning-dynamical fit --config configs/ag_news.yaml``.
"""

from __future__ import annotations

import argparse

from example_common import RoundClock, make_strategy
from lightning.pytorch import Trainer, seed_everything

from lightning_dynamical import ActiveLearningLoop, Classifier
from lightning_dynamical.data import AGNewsDataModule
from lightning_dynamical.models import TextTransformer


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data", help="folder holding ag_news/test.csv")
    p.add_argument("--pool-size", type=int, default=2000, help="pool items (the rest of the file is unused)")
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--initial-size", type=int, default=100, help="M, class-balanced")
    p.add_argument("--query-size", type=int, default=100, help="b")
    p.add_argument("--rounds", type=int, default=4, help="R")
    p.add_argument("--strategy", choices=["dynamical", "random", "entropy"], default="dynamical")
    p.add_argument("--gamma", type=float, default=2.0, help="dynamicAL's gamma")
    p.add_argument("--max-epochs-per-round", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/text_classifier")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    seed_everything(args.seed)
    dm = AGNewsDataModule(root=args.root, pool_size=args.pool_size, test_size=args.test_size, vocab_size=8000,
                          max_length=64, initial_size=args.initial_size, balanced=True, batch_size=32, seed=args.seed)
    net = TextTransformer(vocab_size=dm.vocab_size, num_classes=4, max_length=dm.max_length, dim=64, depth=2,
                          heads=4, dropout=0.1)
    model = Classifier(net, num_classes=4, lr=1e-3, weight_decay=1e-4)
    strategy = make_strategy(args.strategy, args.gamma, args.seed)
    loop = ActiveLearningLoop(strategy, query_size=args.query_size, rounds=args.rounds, patience=3,
                              train_acc_threshold=0.99, max_epochs_per_round=args.max_epochs_per_round,
                              seed=args.seed, dirpath=args.out, save_round_checkpoints=False)
    clock = RoundClock(loop)
    trainer = Trainer(max_epochs=-1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=args.out,
                      callbacks=[loop, clock])
    trainer.fit(model, datamodule=dm)
    print(f"{args.strategy} on AG News: pool {args.pool_size}, test {args.test_size}, "
          f"vocabulary {len(dm.splits.pool.vocabulary)} ids")
    print("| round | labeled | test_acc | epochs | score_s | wall_s |\n|---|---|---|---|---|---|")
    for row, wall in zip(loop.history, clock.times):
        print(f"| {row['round']} | {row['labeled']} | {row['test_acc']:.4f} | {row['epochs']} | "
              f"{row['score_seconds']:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
