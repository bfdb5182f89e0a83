"""SVHN (73,257 train / 26,032 test 32x32 house-number digits) through ``torchvision.datasets.SVHN``."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import SVHN

from lightning_dynamical.data.missing import dataset_files
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.transforms import SVHN_STATS, normalized, padded_crop
from lightning_dynamical.data.views import TransformedView


def build_svhn(root: str | Path, download: bool = False, augment: bool = True) -> DatasetSplits:
    """SVHN from ``<root>/train_32x32.mat`` and ``test_32x32.mat`` as normalised ``(3, 32, 32)`` tensors.

    Labels are 0-9 (torchvision maps the files' label 10 to digit 0). ``pool`` augments with a
    4-pixel-padded random crop only: flipping would turn digits into other shapes. ``pool_eval`` and
    ``test`` only normalise. ``download=True`` fetches the .mat files (needs internet).
    """
    with dataset_files("SVHN", root, "train_32x32.mat and test_32x32.mat", ("train_32x32.mat", "test_32x32.mat")):
        train = SVHN(str(root), split="train", download=download)
        test = SVHN(str(root), split="test", download=download)
    evaluation = normalized(SVHN_STATS)
    training = padded_crop(SVHN_STATS, flip=False) if augment else evaluation
    return DatasetSplits(
        pool=TransformedView(train, train.labels, training),
        pool_eval=TransformedView(train, train.labels, evaluation),
        val=None,
        test=TransformedView(test, test.labels, evaluation),
        num_classes=10,
    )
