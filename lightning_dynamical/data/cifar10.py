"""CIFAR-10 (50k train / 10k test 32x32 colour images) through ``torchvision.datasets.CIFAR10``."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import CIFAR10

from lightning_dynamical.data.missing import dataset_files
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.transforms import CIFAR10_STATS, normalized, padded_crop
from lightning_dynamical.data.views import TransformedView


def build_cifar10(root: str | Path, download: bool = False, augment: bool = True) -> DatasetSplits:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/`` as normalised ``(3, 32, 32)`` tensors.

    ``pool`` augments with a 4-pixel-padded random crop and horizontal flip (``augment=True``);
    ``pool_eval`` and ``test`` only normalise. ``download=True`` fetches the archive (needs internet).
    """
    with dataset_files("CIFAR-10", root, "cifar-10-batches-py/"):
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    evaluation = normalized(CIFAR10_STATS)
    training = padded_crop(CIFAR10_STATS) if augment else evaluation
    return DatasetSplits(
        pool=TransformedView(train, train.targets, training),
        pool_eval=TransformedView(train, train.targets, evaluation),
        val=None,
        test=TransformedView(test, test.targets, evaluation),
        num_classes=len(train.classes),
    )
