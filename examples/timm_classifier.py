"""dynamicAL with a timm network (random init, ``pretrained=False``) on scikit-learn's 8x8 digits.

Any timm classifier works as the ``net`` of :class:`~lightning_dynamical.Classifier`; this one adapts
resnet18's stem to 8x8 images (a 3x3 stride-1 convolution, no max-pool), or a ViT's patches. Needs
``pip install -e '.[examples]'`` (timm). Run from the repository root:

    python examples/timm_classifier.py                       # resnet18
    python examples/timm_classifier.py --model vit_tiny_patch16_224
"""

from __future__ import annotations

import argparse

from example_common import add_loop_arguments, run
from lightning.pytorch import seed_everything
from torch import nn

from lightning_dynamical import Classifier
from lightning_dynamical.data import DigitsDataModule


def timm_for_digits(name: str) -> nn.Module:
    """A randomly initialised timm classifier for 1-channel 8x8 images and 10 classes."""
    import timm

    if name.startswith("vit_"):
        return timm.create_model(name, pretrained=False, num_classes=10, in_chans=1, img_size=8, patch_size=2)
    net = timm.create_model(name, pretrained=False, num_classes=10, in_chans=1)
    if not name.startswith("resnet"):
        raise ValueError(f"--model must be a timm resnet* or vit_* model (adapted to 8x8 images), got {name!r}")
    net.conv1 = nn.Conv2d(1, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18", help="a timm resnet* or vit_* model name")
    add_loop_arguments(p, query_size=50, rounds=3, max_epochs=20, out="runs/timm_classifier")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    seed_everything(args.seed)
    dm = DigitsDataModule(initial_size=args.initial_size, balanced=True, batch_size=32, seed=args.seed)
    model = Classifier(timm_for_digits(args.model), num_classes=10, lr=1e-3)
    run(model, dm, args, lambda: f"{args.strategy}, timm {args.model} on digits: pool {len(dm.splits.pool)}, "
                                 f"test {len(dm.splits.test)}")


if __name__ == "__main__":
    main()
