"""dynamicAL for segmentation: real ISBI 2012 EM membrane tiles and a small U-Net (nothing downloaded).

The data module names the task (``MembraneDataModule`` is a segmentation data set), so the U-Net is trained with the
tile-mean pixel cross-entropy, scored with its per-pixel pseudo labels and measured by mean IoU, with nothing else to
configure. Run from the repository root (the data is ``<root>/membrane/{image,label}/<k>.png``):

    python examples/segmentation.py --root ../shared/data

The same run through the CLI: ``lightning-dynamical fit --config configs/membrane_segmentation.yaml``.
"""

from __future__ import annotations

import argparse

from example_common import add_loop_arguments, run
from lightning.pytorch import seed_everything

from lightning_dynamical import Classifier
from lightning_dynamical.data import MembraneDataModule
from lightning_dynamical.models import UNet


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data", help="folder holding membrane/image and membrane/label")
    p.add_argument("--tile", type=int, default=64, help="tile side; 64 gives 1536 pool tiles and 384 test tiles")
    add_loop_arguments(p, query_size=32, rounds=3, max_epochs=100, out="runs/segmentation", initial_size=32,
                       fit_threshold=None)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    seed_everything(args.seed)
    dm = MembraneDataModule(root=args.root, tile=args.tile, initial_size=args.initial_size, batch_size=16,
                            eval_batch_size=64, seed=args.seed)
    model = Classifier(UNet(in_channels=1, num_classes=2, width=16, depth=3), lr=2e-3)
    run(model, dm, args, lambda: f"{args.strategy} on ISBI 2012 membranes: {dm.num_labeled} labeled of "
                                 f"{dm.num_labeled + dm.num_unlabeled} tiles ({args.tile}x{args.tile})")


if __name__ == "__main__":
    main()
