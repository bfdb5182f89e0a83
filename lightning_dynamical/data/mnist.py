"""MNIST (60k train / 10k test 28x28 grayscale digits) through ``torchvision.datasets.MNIST``."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import MNIST

from lightning_dynamical.data.missing import dataset_files
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.transforms import MNIST_STATS, normalized, padded_crop
from lightning_dynamical.data.views import TransformedView


def build_mnist(root: str | Path, download: bool = False, augment: bool = False) -> DatasetSplits:
    """MNIST as normalised ``(1, 28, 28)`` tensors, read from ``<root>/MNIST/raw/`` idx files.

    ``pool`` augments with a 2-pixel-padded random crop (``augment=True``); otherwise ``pool`` and
    ``pool_eval`` are the same dataset. There is no official validation split. ``download=True`` fetches
    the files (needs internet).
    """
    with dataset_files("MNIST", root, "MNIST/raw/"):
        train = MNIST(str(root), train=True, download=download)
        test = MNIST(str(root), train=False, download=download)
    evaluation = normalized(MNIST_STATS)
    train_targets, test_targets = train.targets.tolist(), test.targets.tolist()
    pool_eval = TransformedView(train, train_targets, evaluation)
    pool = TransformedView(train, train_targets, padded_crop(MNIST_STATS, 28, flip=False, padding=2)) if augment \
        else pool_eval
    return DatasetSplits(pool=pool, pool_eval=pool_eval, val=None, test=TransformedView(test, test_targets, evaluation),
                         num_classes=10)
