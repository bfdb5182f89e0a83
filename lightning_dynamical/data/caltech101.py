"""Caltech101 (8,677 images of 101 object classes, no official split) through ``torchvision.datasets``."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import Caltech101

from lightning_dynamical.data.holdout import stratified_holdout
from lightning_dynamical.data.missing import dataset_files
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.transforms import resized
from lightning_dynamical.data.views import TransformedView


def build_caltech101(root: str | Path, download: bool = False, image_size: int = 224,
                     test_fraction: float = 0.2, seed: int = 0, augment: bool = True) -> DatasetSplits:
    """Caltech101 from ``<root>/caltech101/101_ObjectCategories/`` as ``(3, image_size, image_size)`` tensors.

    Caltech101 has no official train/test split, so ``test_fraction`` of every class is held out with
    ``seed``. Images vary in size and some are grayscale: all are converted to RGB, resized and
    normalised with ImageNet statistics; ``pool`` also applies a random resized crop and flip
    (``augment=True``). ``download=True`` fetches the archive (needs internet).
    """
    with dataset_files("Caltech101", root, "caltech101/101_ObjectCategories/"):
        full = Caltech101(str(root), target_type="category", download=download)
    pool, test = stratified_holdout(full.y, test_fraction, seed, "test_fraction")
    evaluation = resized(image_size)
    training = resized(image_size, augment=True) if augment else evaluation
    return DatasetSplits(
        pool=TransformedView(full, full.y, training, pool),
        pool_eval=TransformedView(full, full.y, evaluation, pool),
        val=None,
        test=TransformedView(full, full.y, evaluation, test) if test else None,
        num_classes=len(full.categories),
    )
