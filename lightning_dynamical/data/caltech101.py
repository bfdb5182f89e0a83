"""Caltech101 (8,677 images of 101 object classes, no official split) through ``torchvision.datasets``."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import Caltech101

from lightning_dynamical.data.holdout import stratified_holdout
from lightning_dynamical.data.missing import dataset_files
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.transforms import resized
from lightning_dynamical.data.views import TransformedView
from lightning_dynamical.errors import ConfigError


def build_caltech101(root: str | Path, download: bool = False, image_size: int = 224,
                     test_fraction: float = 0.2, seed: int = 0, augment: bool = True) -> DatasetSplits:
    """Caltech101 from ``<root>/caltech101/101_ObjectCategories/`` as ``(3, image_size, image_size)`` tensors.

    Caltech101 has no official train/test split, so ``test_fraction`` of every class is held out with
    ``seed``. Images vary in size and some are grayscale: all are converted to RGB, resized and
    normalised with ImageNet statistics; ``pool`` also applies a random resized crop and flip
    (``augment=True``). ``download=True`` fetches the archive (needs internet).
    """
    folder = Path(root) / "caltech101" / "101_ObjectCategories"
    with dataset_files("Caltech101", root, "caltech101/101_ObjectCategories/"):
        if not download and not folder.is_dir():  # before torchvision creates <root>/caltech101
            raise RuntimeError("Dataset not found")
        if folder.is_dir():
            check_layout(folder)
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


def check_layout(folder: Path) -> None:
    """What torchvision's ``Caltech101`` assumes of ``101_ObjectCategories/`` without checking: a folder per category
    and ``BACKGROUND_Google`` among them, each holding ``image_0001.jpg`` to ``image_<n>.jpg`` and nothing else (it
    counts a folder's entries and opens those names, so a stray ``.DS_Store`` is a phantom sample); a
    :class:`ConfigError` naming what is not so."""
    entries = sorted(folder.iterdir())
    loose = [p.name for p in entries if not p.is_dir()]
    if loose:
        raise ConfigError(f"Caltech101: {folder} must hold only category folders; remove {_some(loose)}")
    if not any(p.name == "BACKGROUND_Google" for p in entries):
        raise ConfigError(f"Caltech101: {folder} has no BACKGROUND_Google folder, which the original archive has and "
                          f"torchvision's Caltech101 needs (it is not a class; an empty folder will do)")
    for category in (p for p in entries if p.name != "BACKGROUND_Google"):  # torchvision never reads it
        names = sorted(p.name for p in category.iterdir())
        unexpected = sorted(set(names) - {f"image_{k:04d}.jpg" for k in range(1, len(names) + 1)})
        if unexpected:
            raise ConfigError(f"Caltech101: {category} must hold image_0001.jpg to image_{len(names):04d}.jpg only "
                              f"(torchvision numbers a category's images by counting its files); found "
                              f"{_some(unexpected)}")


def _some(names: list[str]) -> str:
    """Up to 5 names, and how many more."""
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
