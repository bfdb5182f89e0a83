"""Data sets as :class:`~lightning_dynamical.splits.DatasetSplits` builders and the matching
ActiveLearningDataModule subclasses."""

from lightning_dynamical.data.modules import (
    AGNewsDataModule,
    Caltech101DataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    NamedDataModule,
    SVHNDataModule,
)
from lightning_dynamical.splits import DatasetSplits

__all__ = ["AGNewsDataModule", "CIFAR10DataModule", "Caltech101DataModule", "DatasetSplits", "DigitsDataModule",
           "ImageFolderDataModule", "MNISTDataModule", "NamedDataModule", "SVHNDataModule"]
