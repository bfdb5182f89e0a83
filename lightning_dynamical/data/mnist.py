"""MNIST (60k train / 10k test 28x28 grayscale digits) through ``torchvision.datasets.MNIST``."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import MNIST

from lightning_dynamical.data.missing import dataset_files
from lightning_dynamical.data.transforms import MNIST_STATS, normalized
from lightning_dynamical.splits import DatasetSplits


def build_mnist(root: str | Path, download: bool = False) -> DatasetSplits:
    """MNIST as normalised ``(1, 28, 28)`` tensors, read from ``<root>/MNIST/raw/`` idx files.

    ``download=True`` fetches the files (needs internet). No augmentation, so ``pool`` and ``pool_eval``
    are the same dataset; there is no official validation split.
    """
    transform = normalized(MNIST_STATS)
    with dataset_files("MNIST", root, "MNIST/raw/"):
        pool = MNIST(str(root), train=True, transform=transform, download=download)
        test = MNIST(str(root), train=False, transform=transform, download=download)
    return DatasetSplits(pool=pool, pool_eval=pool, val=None, test=test, num_classes=10)
