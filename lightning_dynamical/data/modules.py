"""Active-learning DataModules configured by name (LightningCLI ``class_path``), one per data set.

Each subclass only builds its :class:`DatasetSplits`; the labeled/unlabeled bookkeeping and the shared options
come from :class:`NamedDataModule`, which takes no datasets (so ``--data.help`` lists only options a config can
set). Data sets that can be downloaded do it in ``prepare_data`` (rank 0 only) when ``download=True``. Seeded
hold-out splits use ``split_seed``, separate from ``seed`` (the initial labeled set), so repeated runs share a
test set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from lightning_dynamical.data.ag_news import build_ag_news
from lightning_dynamical.data.caltech101 import build_caltech101
from lightning_dynamical.data.cifar10 import build_cifar10
from lightning_dynamical.data.datamodule import ActiveLearningDataModule
from lightning_dynamical.data.digits import build_digits
from lightning_dynamical.data.image_folder import build_image_folder
from lightning_dynamical.data.membrane import build_membrane
from lightning_dynamical.data.mnist import build_mnist
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.svhn import build_svhn
from lightning_dynamical.data.wikiann import TAGS, WikiANNView, build_wikiann
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import LABEL_KEY
from lightning_dynamical.tasks.names import TaskName
from lightning_dynamical.tasks.tokens import TokenClassification


class NamedDataModule(ActiveLearningDataModule):
    """An :class:`ActiveLearningDataModule` that builds its own datasets in :meth:`build_splits`.

    Args:
        initial_size: size of the initial labeled set (M), drawn with ``seed``.
        balanced: draw the initial labeled set class-balanced.
        val_size: samples of the pool held out for validation (an int, or a fraction in [0, 1)); 0 = none.
        batch_size: training batch size.
        eval_batch_size: batch size for scoring the pool and for evaluation.
        num_workers: DataLoader worker processes.
        seed: seeds the initial labeled set, the validation hold-out and the training shuffles.
    """

    task_name: ClassVar[TaskName | Task] = "classification"
    """The data set's task, by name or with its settings (a subclass of another task sets it)."""

    def __init__(self, *, initial_size: int = 500, balanced: bool = False, val_size: int | float = 0,
                 batch_size: int = 64, eval_batch_size: int = 256, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(initial_size=initial_size, balanced=balanced, val_size=val_size, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed, task=self.task_name)


class DigitsDataModule(NamedDataModule):
    """scikit-learn's 8x8 digits (shipped with scikit-learn, no download).

    Args:
        test_size: samples held out as the test set.
        split_seed: seeds the test hold-out.
    """

    def __init__(self, *, test_size: int = 397, split_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test_size = test_size
        self.split_seed = split_seed

    def build_splits(self) -> DatasetSplits:
        return build_digits(test_size=self.test_size, seed=self.split_seed)


class DownloadableDataModule(NamedDataModule):
    """A torchvision data set read from files under ``root`` by ``builder(root, download=..., augment=...)``.

    Subclasses set ``builder`` and declare their own typed, documented constructor (their ``augment`` default).
    """

    builder: ClassVar[Callable[..., DatasetSplits]]

    def __init__(self, *, root: str, download: bool, augment: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = download
        self.augment = augment

    def prepare_data(self) -> None:
        if self.download:
            type(self).builder(self.root, download=True)

    def build_splits(self) -> DatasetSplits:
        return type(self).builder(self.root, augment=self.augment)


class MNISTDataModule(DownloadableDataModule):
    """MNIST (60k train / 10k test).

    Args:
        root: folder holding ``MNIST/raw/`` (torchvision's layout).
        download: fetch the files into ``root`` first (needs internet).
        augment: random 2-pixel shifts for training (scoring and evaluation never augment).
    """

    builder = staticmethod(build_mnist)

    def __init__(self, *, root: str = "data", download: bool = False, augment: bool = False, **kwargs: Any) -> None:
        super().__init__(root=root, download=download, augment=augment, **kwargs)


class CIFAR10DataModule(DownloadableDataModule):
    """CIFAR-10 (50k train / 10k test).

    Args:
        root: folder holding ``cifar-10-batches-py/``.
        download: fetch the files into ``root`` first (needs internet).
        augment: random crop and flip for training (scoring and evaluation never augment).
    """

    builder = staticmethod(build_cifar10)

    def __init__(self, *, root: str = "data", download: bool = False, augment: bool = True, **kwargs: Any) -> None:
        super().__init__(root=root, download=download, augment=augment, **kwargs)


class SVHNDataModule(DownloadableDataModule):
    """SVHN (73k train / 26k test).

    Args:
        root: folder holding ``train_32x32.mat`` and ``test_32x32.mat``.
        download: fetch the files into ``root`` first (needs internet).
        augment: random crops for training (scoring and evaluation never augment).
    """

    builder = staticmethod(build_svhn)

    def __init__(self, *, root: str = "data", download: bool = False, augment: bool = True, **kwargs: Any) -> None:
        super().__init__(root=root, download=download, augment=augment, **kwargs)


class Caltech101DataModule(NamedDataModule):
    """Caltech101 (101 classes, about 8.7k images), resized to squares.

    Args:
        root: folder holding ``caltech101/101_ObjectCategories/``.
        download: fetch the files into ``root`` first (needs internet).
        image_size: side of the resized square images.
        test_fraction: fraction of every class held out as the test set.
        split_seed: seeds the test hold-out.
        augment: random resized crop and flip for training.
    """

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


class ImageFolderDataModule(NamedDataModule):
    """Your own images, one sub-folder per class, resized to squares.

    Args:
        root: folder with ``<class>/*`` images, or with ``train/``, ``val/`` and ``test/`` folders of them.
        image_size: side of the resized square images.
        val_fraction: fraction of every class held out for validation (single folder only).
        test_fraction: fraction of every class held out as the test set (single folder only).
        split_seed: seeds the hold-outs.
        augment: random resized crop and flip for training.
    """

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


class MembraneDataModule(NamedDataModule):
    """ISBI 2012 EM membrane segmentation (30 slices, split by slice) as ``tile`` x ``tile`` tiles with per-pixel
    masks (0 = membrane, 1 = interior). Its ``task`` is :class:`~lightning_dynamical.tasks.Segmentation`, which the
    loop, the strategy and the model read from it. The files ship with the data (no download).

    Args:
        root: folder holding ``membrane/image/<k>.png`` and ``membrane/label/<k>.png``.
        tile: side of the square tiles; must divide the slice size (512).
        test_slices: the last slices (highest ``k``), held out as the test set.
        val_slices: the slices before the test slices, held out for validation (0: none).
        augment: random horizontal and vertical flips of image and mask for training (scoring and evaluation never
            augment).
        initial_size: tiles in the initial labeled set (the default pool has 24 slices x 16 tiles = 384).
        balanced: must stay ``False``: a class-balanced draw needs one class per sample, a mask has one per pixel.

    Raises:
        ConfigError: ``balanced=True``.
    """

    task_name = "segmentation"

    def __init__(self, *, root: str = "data", tile: int = 128, test_slices: int = 6, val_slices: int = 0,
                 augment: bool = False, initial_size: int = 32, balanced: bool = False, **kwargs: Any) -> None:
        super().__init__(initial_size=initial_size, balanced=balanced, **kwargs)
        self.root = root
        self.tile = tile
        self.test_slices = test_slices
        self.val_slices = val_slices
        self.augment = augment

    def build_splits(self) -> DatasetSplits:
        return build_membrane(self.root, tile=self.tile, test_slices=self.test_slices, val_slices=self.val_slices,
                              augment=self.augment)


class AGNewsDataModule(NamedDataModule):
    """AG News from its CSV (``label,title,description`` rows, labels 1-4), as dict batches of token ids.

    The word vocabulary comes from the pool texts only; give the network the same ``vocab_size``.

    Args:
        root: folder holding ``file``.
        file: the CSV, relative to ``root``.
        pool_size: items in the pool (``None``: every item not held out for test).
        test_size: items held out as the test set.
        vocab_size: most token ids (padding and unknown included); every id is below it.
        min_freq: least number of pool texts' occurrences for a word to get its own id.
        max_length: tokens per item (truncated or padded).
        split_seed: seeds the test/pool split.
        label_key: the target's key in the items (and so in the batches).
    """

    def __init__(self, *, root: str = "data", file: str = "ag_news/test.csv", pool_size: int | None = None,
                 test_size: int = 1000, vocab_size: int = 8000, min_freq: int = 2, max_length: int = 64,
                 split_seed: int = 0, label_key: str = LABEL_KEY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.file = file
        self.pool_size = pool_size
        self.test_size = test_size
        self.vocab_size = vocab_size
        self.min_freq = min_freq
        self.max_length = max_length
        self.split_seed = split_seed
        self.label_key = label_key

    def build_splits(self) -> DatasetSplits:
        return build_ag_news(self.root, self.file, pool_size=self.pool_size, test_size=self.test_size,
                             vocab_size=self.vocab_size, min_freq=self.min_freq, max_length=self.max_length,
                             seed=self.split_seed, label_key=self.label_key)


class WikiANNDataModule(NamedDataModule):
    """WikiANN sentences (``<root>/wikiann/<language>/{train,test}``) as dict batches of token ids; a subclass picks
    the view of the annotations (:class:`WikiANNNERDataModule`, :class:`WikiANNMultiLabelDataModule`).

    The word vocabulary comes from the pool sentences only; give the network the same ``vocab_size`` and
    ``max_length``. ``dev`` is not read: hold out part of the pool with ``val_size`` for validation.

    Args:
        root: folder holding ``wikiann/<language>/train`` and ``wikiann/<language>/test``.
        pool_size: sentences of ``train`` in the pool, a seeded subset (``None``: all 20,000 of English).
        test_size: sentences of ``test`` in the test set, a seeded subset (``None``: all 10,000 of English).
        vocab_size: most token ids (padding and unknown included); every id is below it.
        min_freq: least number of pool occurrences for a word to get its own id.
        max_length: tokens per sentence (truncated or padded).
        lowercase: lower-case the words (a smaller vocabulary, but capitals, a strong cue for names, are lost).
        language: the files' folder and token prefix (``en`` for ``en:<token>``).
        split_seed: seeds the pool and test subsets.
        label_key: the target's key in the items (and so in the batches).
        initial_size: sentences in the initial labeled set (M).
        balanced: must stay ``False``: a class-balanced draw needs one class per sample.
    """

    view: ClassVar[WikiANNView]

    def __init__(self, *, root: str = "data", pool_size: int | None = None, test_size: int | None = None,
                 vocab_size: int = 20000, min_freq: int = 1, max_length: int = 32, lowercase: bool = False,
                 language: str = "en", split_seed: int = 0, label_key: str = LABEL_KEY, initial_size: int = 100,
                 balanced: bool = False, **kwargs: Any) -> None:
        if not hasattr(type(self), "view"):
            raise ConfigError(f"{type(self).__name__} picks no view of WikiANN; use WikiANNNERDataModule or "
                              "WikiANNMultiLabelDataModule")
        super().__init__(initial_size=initial_size, balanced=balanced, **kwargs)
        self.root = root
        self.pool_size = pool_size
        self.test_size = test_size
        self.vocab_size = vocab_size
        self.min_freq = min_freq
        self.max_length = max_length
        self.lowercase = lowercase
        self.language = language
        self.split_seed = split_seed
        self.label_key = label_key

    def build_splits(self) -> DatasetSplits:
        return build_wikiann(self.root, self.view, pool_size=self.pool_size, test_size=self.test_size,
                             vocab_size=self.vocab_size, min_freq=self.min_freq, max_length=self.max_length,
                             lowercase=self.lowercase, language=self.language, seed=self.split_seed,
                             label_key=self.label_key)


class WikiANNNERDataModule(WikiANNDataModule):
    """WikiANN named-entity recognition: a tag per token (7 IOB2 tags, ``labels`` ``(max_length,)`` int64, -100 at
    padding). Its ``task`` is token classification with WikiANN's tags (logits ``(batch, T, 7)``, e.g. from
    :class:`~lightning_dynamical.models.TokenTagger`; headline metric entity F1); the options are
    :class:`WikiANNDataModule`'s."""

    task_name = TokenClassification(tags=TAGS)
    view = "ner"


class WikiANNMultiLabelDataModule(WikiANNDataModule):
    """WikiANN as multi-label sentence classification: which entity types (PER, ORG, LOC) a sentence mentions
    (``labels`` ``(3,)`` float32 0/1). Its ``task`` is multi-label (logits ``(batch, 3)``, e.g. from
    :class:`~lightning_dynamical.models.TextTransformer`); the options are :class:`WikiANNDataModule`'s."""

    task_name = "multilabel"
    view = "multilabel"
