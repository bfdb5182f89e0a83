"""Data sets as :class:`DatasetSplits` builders and the matching ActiveLearningDataModule subclasses.

The DataModules are imported lazily: ``pool.py`` imports ``data.splits``, and the modules import ``pool``.
"""

from typing import Any

from lightning_dynamical.data.splits import DatasetSplits

_MODULES = ("AGNewsDataModule", "CIFAR10DataModule", "Caltech101DataModule", "DigitsDataModule",
            "ImageFolderDataModule", "MNISTDataModule", "NamedDataModule", "SVHNDataModule")

__all__ = ["DatasetSplits", *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        from lightning_dynamical.data import modules

        return getattr(modules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
