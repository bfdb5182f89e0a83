"""Active-learning DataModules configured by name (LightningCLI ``class_path``), one per data set.

Each subclass only builds its :class:`DatasetSplits`; the labeled/unlabeled bookkeeping and the shared
options (``initial_size``, ``balanced``, ``val_size``, batch sizes, ``num_workers``, ``seed``) come from
:class:`~lightning_dynamical.pool.ActiveLearningDataModule` through ``**kwargs``. Data sets that can be
downloaded do it in ``prepare_data`` (rank 0 only) when ``download=True``. Seeded hold-out splits use
``split_seed``, separate from ``seed`` (the initial labeled set), so repeated runs share a test set.
"""

from __future__ import annotations

from typing import Any

from lightning_dynamical.data.ag_news import build_ag_news
from lightning_dynamical.data.caltech101 import build_caltech101
from lightning_dynamical.data.cifar10 import build_cifar10
from lightning_dynamical.data.digits import build_digits
from lightning_dynamical.data.image_folder import build_image_folder
from lightning_dynamical.data.mnist import build_mnist
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.svhn import build_svhn
from lightning_dynamical.pool import ActiveLearningDataModule


class DigitsDataModule(ActiveLearningDataModule):
    """scikit-learn's 8x8 digits (shipped with scikit-learn, no download); ``test_size`` samples held out."""

    def __init__(self, *, test_size: int = 397, split_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test_size = test_size
        self.split_seed = split_seed

    def build_splits(self) -> DatasetSplits:
        return build_digits(test_size=self.test_size, seed=self.split_seed)


class MNISTDataModule(ActiveLearningDataModule):
    """MNIST from ``<root>/MNIST/raw/``; ``download=True`` fetches it (needs internet)."""

    def __init__(self, *, root: str = "data", download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = download

    def prepare_data(self) -> None:
        if self.download:
            build_mnist(self.root, download=True)

    def build_splits(self) -> DatasetSplits:
        return build_mnist(self.root)


class CIFAR10DataModule(ActiveLearningDataModule):
    """CIFAR-10 from ``<root>/cifar-10-batches-py/``; ``augment`` enables random crop + flip for training."""

    def __init__(self, *, root: str = "data", download: bool = False, augment: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = download
        self.augment = augment

    def prepare_data(self) -> None:
        if self.download:
            build_cifar10(self.root, download=True)

    def build_splits(self) -> DatasetSplits:
        return build_cifar10(self.root, augment=self.augment)


class SVHNDataModule(ActiveLearningDataModule):
    """SVHN from ``<root>/{train,test}_32x32.mat``; ``augment`` enables random crops for training."""

    def __init__(self, *, root: str = "data", download: bool = False, augment: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = download
        self.augment = augment

    def prepare_data(self) -> None:
        if self.download:
            build_svhn(self.root, download=True)

    def build_splits(self) -> DatasetSplits:
        return build_svhn(self.root, augment=self.augment)


class Caltech101DataModule(ActiveLearningDataModule):
    """Caltech101 from ``<root>/caltech101/``, resized to ``image_size``; ``test_fraction`` per class held out."""

    def __init__(self, *, root: str = "data", download: bool = False, image_size: int = 224,
                 test_fraction: float = 0.2, split_seed: int = 0, augment: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = download
        self.image_size = image_size
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.augment = augment

    def prepare_data(self) -> None:
        if self.download:
            build_caltech101(self.root, download=True)

    def build_splits(self) -> DatasetSplits:
        return build_caltech101(self.root, image_size=self.image_size, test_fraction=self.test_fraction,
                                seed=self.split_seed, augment=self.augment)


class ImageFolderDataModule(ActiveLearningDataModule):
    """Class-per-folder images under ``root`` (or ``root/{train,val,test}``), resized to ``image_size``."""

    def __init__(self, *, root: str, image_size: int = 224, val_fraction: float = 0.0,
                 test_fraction: float = 0.2, split_seed: int = 0, augment: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.augment = augment

    def build_splits(self) -> DatasetSplits:
        return build_image_folder(self.root, image_size=self.image_size, val_fraction=self.val_fraction,
                                  test_fraction=self.test_fraction, seed=self.split_seed, augment=self.augment)


class AGNewsDataModule(ActiveLearningDataModule):
    """AG News from ``<root>/<file>`` (``label,title,description`` rows), as dict batches of token ids.

    A seeded split (``split_seed``) holds out ``test_size`` items; the pool keeps ``pool_size`` of the
    others (all when ``None``). The word vocabulary (at most ``vocab_size`` ids, words seen ``min_freq``
    times) comes from the pool texts; give the network the same ``vocab_size``. Items are truncated or
    padded to ``max_length`` tokens.
    """

    def __init__(self, *, root: str = "data", file: str = "ag_news/test.csv", pool_size: int | None = None,
                 test_size: int = 1000, vocab_size: int = 8000, min_freq: int = 2, max_length: int = 64,
                 split_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.file = file
        self.pool_size = pool_size
        self.test_size = test_size
        self.vocab_size = vocab_size
        self.min_freq = min_freq
        self.max_length = max_length
        self.split_seed = split_seed

    def build_splits(self) -> DatasetSplits:
        return build_ag_news(self.root, self.file, pool_size=self.pool_size, test_size=self.test_size,
                             vocab_size=self.vocab_size, min_freq=self.min_freq, max_length=self.max_length,
                             seed=self.split_seed, label_key=self.label_key)
