"""dynamicAL on real AG News items with a small transformer built from its arguments (nothing downloaded).

Batches are dicts (``input_ids``, ``attention_mask``, ``labels``), as Hugging Face models take them; the
vocabulary is built from the pool texts. Run from the repository root (the data is ``<root>/ag_news/test.csv``):

    python examples/text_classifier.py --root ../shared/data

The same run through the CLI: ``lightning-dynamical fit --config configs/ag_news.yaml``.
"""

from __future__ import annotations

import argparse

from example_common import add_loop_arguments, run
from lightning.pytorch import seed_everything

from lightning_dynamical import Classifier
from lightning_dynamical.data import AGNewsDataModule
from lightning_dynamical.models import TextTransformer


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data", help="folder holding ag_news/test.csv")
    p.add_argument("--pool-size", type=int, default=2000, help="pool items (the rest of the file is unused)")
    p.add_argument("--test-size", type=int, default=1000)
    add_loop_arguments(p, query_size=100, rounds=4, max_epochs=30, out="runs/text_classifier")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    seed_everything(args.seed)
    dm = AGNewsDataModule(root=args.root, pool_size=args.pool_size, test_size=args.test_size, vocab_size=8000,
                          max_length=64, initial_size=args.initial_size, balanced=True, batch_size=32, seed=args.seed)
    net = TextTransformer(vocab_size=dm.vocab_size, num_classes=4, max_length=dm.max_length, dim=64, depth=2,
                          heads=4, dropout=0.1)
    model = Classifier(net, num_classes=4, lr=1e-3, weight_decay=1e-4)
    run(model, dm, args, lambda: f"{args.strategy} on AG News: pool {args.pool_size}, test {args.test_size}, "
                                 f"vocabulary {len(dm.splits.pool.vocabulary)} ids")


if __name__ == "__main__":
    main()
