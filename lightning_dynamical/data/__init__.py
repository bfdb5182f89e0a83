"""Data: the labeled/unlabeled pool (:class:`ActiveLearningDataModule`, :mod:`.datamodule`), what a builder returns
(:mod:`.splits`), and data sets as builders with their DataModule subclasses."""

from lightning_dynamical.data.modules import (
    AGNewsDataModule,
    Caltech101DataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    MembraneDataModule,
    MNISTDataModule,
    NamedDataModule,
    SVHNDataModule,
    WikiANNMultiLabelDataModule,
    WikiANNNERDataModule,
)
from lightning_dynamical.data.splits import DatasetSplits

__all__ = ["AGNewsDataModule", "CIFAR10DataModule", "Caltech101DataModule", "DatasetSplits", "DigitsDataModule",
           "ImageFolderDataModule", "MembraneDataModule", "MNISTDataModule", "NamedDataModule", "SVHNDataModule",
           "WikiANNMultiLabelDataModule", "WikiANNNERDataModule"]
