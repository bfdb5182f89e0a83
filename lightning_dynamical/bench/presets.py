"""What the bench runs: strategies by name and data-set presets (the DataModule, network and optimiser of
each data set's config)."""


from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, overload

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from lightning_dynamical import data as datasets
from lightning_dynamical import models
from lightning_dynamical.data.splits import DatasetSplits, dataset_size
from lightning_dynamical.strategies.albl import ALBL
from lightning_dynamical.strategies.badge import BADGE
from lightning_dynamical.strategies.bald import BALD
from lightning_dynamical.strategies.base import Strategy
from lightning_dynamical.strategies.coreset import Coreset
from lightning_dynamical.strategies.dynamical import DynamicAL
from lightning_dynamical.strategies.random import Random
from lightning_dynamical.strategies.uncertainty import Entropy, LeastConfidence, Margin
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import batch_targets

STRATEGIES: dict[str, Callable[[int], Strategy]] = {
    "random": lambda seed: Random(seed=seed),
    "entropy": lambda seed: Entropy(),
    "margin": lambda seed: Margin(),
    "least_confidence": lambda seed: LeastConfidence(),
    "bald": lambda seed: BALD(seed=seed),
    "badge": lambda seed: BADGE(seed=seed),
    "coreset": lambda seed: Coreset(seed=seed),
    "albl": lambda seed: ALBL(seed=seed),
    "dynamical": lambda seed: DynamicAL(gamma=2.0),
    "dynamical_gamma0": lambda seed: DynamicAL(gamma=0.0),
    "dynamical_gamma1": lambda seed: DynamicAL(gamma=1.0),
    "dynamical_inf": lambda seed: DynamicAL(gamma=math.inf),
    "dynamical_greedy4": lambda seed: DynamicAL(gamma=2.0, greedy_chunks=4),
    "dynamical_last_layer": lambda seed: DynamicAL(gamma=2.0, params="last_layer"),
    "dynamical_deinfluence": lambda seed: DynamicAL(gamma=2.0, deinfluence=5),
}



@dataclass(frozen=True)
class Preset:
    """How a data set is benchmarked: the DataModule and network its config (``configs/<config>``) names, with
    the same options; ``tests/bench/test_bench.py`` checks that each preset and its config agree.

    ``data`` builds the DataModule from the bench arguments (only its :meth:`build_splits` is used: the bench
    makes its own labeled/unlabeled split per seed); ``net`` takes ``(num_classes, image_size)``.
    """

    data: Callable[[argparse.Namespace], datasets.NamedDataModule]
    net: Callable[[int, int], nn.Module]
    model: str
    config: str
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    eval_batch_size: int = 512
    cache: bool = False
    """Decode the evaluation data once into tensors (small images; the augmented training view stays lazy)."""
    augments: bool = False
    """The DataModule takes ``augment`` (``--augment/--no-augment``; its own default otherwise)."""


def _augment(args: argparse.Namespace) -> dict[str, bool]:
    return {} if getattr(args, "augment", None) is None else {"augment": args.augment}


def _digits(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.DigitsDataModule()


def _mnist(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.MNISTDataModule(root=args.root, **_augment(args))


def _cifar10(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.CIFAR10DataModule(root=args.root, **_augment(args))


def _svhn(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.SVHNDataModule(root=args.root, **_augment(args))


def _caltech101(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.Caltech101DataModule(root=args.root, image_size=args.image_size, **_augment(args))


def _image_folder(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.ImageFolderDataModule(root=args.root, image_size=args.image_size, **_augment(args))


AG_NEWS_POOL, AG_NEWS_VOCAB, AG_NEWS_LENGTH = 2000, 8000, 64
"""AG News as ``configs/ag_news.yaml`` has it: pool items, vocabulary size (the network's too), tokens per item."""


def _ag_news(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.AGNewsDataModule(root=args.root, pool_size=AG_NEWS_POOL, test_size=1000,
                                     vocab_size=AG_NEWS_VOCAB, max_length=AG_NEWS_LENGTH)


MEMBRANE_TILE = 64
"""Membrane tiles as ``configs/membrane_segmentation.yaml`` has them: 64x64 (24 pool slices x 64 tiles = 1536)."""


def _membrane(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.MembraneDataModule(root=args.root, tile=MEMBRANE_TILE, **_augment(args))


def _unet(num_classes: int, image_size: int) -> nn.Module:
    return models.UNet(1, num_classes, width=16, depth=3)


WIKIANN_POOL, WIKIANN_TEST, WIKIANN_VOCAB, WIKIANN_LENGTH = 4000, 2000, 8000, 32
"""WikiANN as ``configs/wikiann_ner.yaml`` and ``wikiann_multilabel.yaml`` have it: pool and test sentences,
vocabulary size (the network's too), tokens per sentence."""


def _wikiann_ner(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.WikiANNNERDataModule(root=args.root, pool_size=WIKIANN_POOL, test_size=WIKIANN_TEST,
                                         vocab_size=WIKIANN_VOCAB, max_length=WIKIANN_LENGTH)


def _wikiann_multilabel(args: argparse.Namespace) -> datasets.NamedDataModule:
    return datasets.WikiANNMultiLabelDataModule(root=args.root, pool_size=WIKIANN_POOL, test_size=WIKIANN_TEST,
                                                vocab_size=WIKIANN_VOCAB, max_length=WIKIANN_LENGTH)


def _tagger(num_classes: int, image_size: int) -> nn.Module:
    return models.TokenTagger(WIKIANN_VOCAB, num_classes, max_length=WIKIANN_LENGTH, dim=64, depth=1, heads=4,
                              dropout=0.1)


def _sentence_transformer(num_classes: int, image_size: int) -> nn.Module:
    return models.TextTransformer(WIKIANN_VOCAB, num_classes, max_length=WIKIANN_LENGTH, dim=64, depth=1, heads=4,
                                  dropout=0.1)


def _resnet18(num_classes: int, image_size: int) -> nn.Module:
    return models.resnet18(num_classes, in_channels=3, cifar_stem=image_size <= 64)


def _cifar_cnn(num_classes: int, image_size: int) -> nn.Module:
    return models.CifarCNN(num_classes, in_channels=3, width=32)


def _digits_cnn(num_classes: int, image_size: int) -> nn.Module:
    return models.DigitsCNN(num_classes, dropout=0.25)


def _lenet(num_classes: int, image_size: int) -> nn.Module:
    return models.LeNet(num_classes, in_channels=1, dropout=0.25)


def _vgg11(num_classes: int, image_size: int) -> nn.Module:
    return models.vgg11(num_classes, in_channels=3, dropout=0.0)


def _text_transformer(num_classes: int, image_size: int) -> nn.Module:
    return models.TextTransformer(AG_NEWS_VOCAB, num_classes, max_length=AG_NEWS_LENGTH, dim=64, depth=2, heads=4,
                                  dropout=0.1)


PRESETS: dict[str, Preset] = {
    "digits": Preset(_digits, _digits_cnn, "DigitsCNN", "digits.yaml", lr=2e-3, batch_size=32, eval_batch_size=256),
    "mnist": Preset(_mnist, _lenet, "LeNet (conv16-conv32, dropout, linear)", "mnist_cnn.yaml", lr=2e-3,
                    batch_size=32, eval_batch_size=1024, cache=True, augments=True),
    "cifar10": Preset(_cifar10, _cifar_cnn, "CifarCNN (width 32)", "cifar10_cnn.yaml", weight_decay=5e-4,
                      augments=True),
    "cifar10_resnet18": Preset(_cifar10, _resnet18, "ResNet-18 (CIFAR stem)", "cifar10_resnet18.yaml",
                               optimizer="sgd", lr=0.02, weight_decay=5e-4, batch_size=128, augments=True),
    "svhn": Preset(_svhn, _vgg11, "VGG-11", "svhn_vgg11.yaml", optimizer="sgd", lr=0.01, weight_decay=5e-4,
                   batch_size=128, augments=True),
    "caltech101": Preset(_caltech101, _resnet18, "ResNet-18", "caltech101_resnet18.yaml", optimizer="sgd", lr=0.02,
                         weight_decay=5e-4, eval_batch_size=256, augments=True),
    "image_folder": Preset(_image_folder, _resnet18, "ResNet-18", "image_folder.yaml", optimizer="sgd", lr=0.02,
                           weight_decay=5e-4, eval_batch_size=256, augments=True),
    "membrane": Preset(_membrane, _unet, "UNet (width 16, depth 3, upsample + conv decoder)",
                       "membrane_segmentation.yaml", lr=2e-3, batch_size=16, eval_batch_size=64, cache=True,
                       augments=True),
    "wikiann_ner": Preset(_wikiann_ner, _tagger, "TokenTagger (dim 64, 1 block, 4 heads)", "wikiann_ner.yaml",
                          lr=3e-3, weight_decay=1e-4, batch_size=32, eval_batch_size=256),
    "wikiann_multilabel": Preset(_wikiann_multilabel, _sentence_transformer, "TextTransformer (dim 64, 1 block)",
                                 "wikiann_multilabel.yaml", lr=1e-3, weight_decay=1e-4, batch_size=32,
                                 eval_batch_size=256),
    "ag_news": Preset(_ag_news, _text_transformer, "TextTransformer (dim 64, 2 blocks, 4 heads)", "ag_news.yaml",
                      weight_decay=1e-4, batch_size=32, eval_batch_size=256),
}


def preset_task(args: argparse.Namespace) -> Task:
    """The task of the preset's data module (its headline metric is the bench's ``test_metric``)."""
    return PRESETS[args.data].data(args).task


def load_splits(args: argparse.Namespace) -> DatasetSplits:
    """The preset's splits, the pool cut to a seeded ``pool_limit`` samples (the same for every run)."""
    preset = PRESETS[args.data]
    splits = preset.data(args).build_splits()
    if args.pool_limit is not None and args.pool_limit < dataset_size(splits.pool):
        perm = torch.randperm(dataset_size(splits.pool), generator=torch.Generator().manual_seed(0))
        keep = perm[: args.pool_limit].sort().values.tolist()
        splits = DatasetSplits(Subset(splits.pool, keep), Subset(splits.pool_eval, keep), splits.val, splits.test,
                               splits.num_classes)
    if getattr(args, "imbalanced_pool", False):
        splits = imbalanced_pool(splits)
    if not preset.cache:
        return splits
    pool_eval = materialize(splits.pool_eval)
    pool = pool_eval if splits.pool is splits.pool_eval or _same_view(splits.pool, splits.pool_eval) else splits.pool
    return DatasetSplits(pool, pool_eval, materialize(splits.val), materialize(splits.test), splits.num_classes)


AUTHORS_CLASS_RATIOS = (0.2967, 0.4941, 0.7035, 0.4236, 0.1752, 0.7764, 0.38670932, 0.1355, 0.8960, 0.8871)
"""The share of each class the authors' imbalanced pool keeps (their ``data_loader.py``; 10 classes)."""


def imbalanced_pool(splits: DatasetSplits) -> DatasetSplits:
    """The pool with ``int(ratio_c * n_c)`` samples of each class ``c`` kept (seeded, the same for every run), as
    the authors' imbalanced setting does; val and test stay as they are."""
    if splits.num_classes != len(AUTHORS_CLASS_RATIOS):
        raise ValueError(f"--imbalanced-pool uses the authors' 10 class ratios; this data set has "
                         f"{splits.num_classes} classes")
    targets = torch.cat([batch_targets(b) for b in DataLoader(splits.pool_eval, batch_size=1024)])
    gen = torch.Generator().manual_seed(0)
    keep: list[int] = []
    for c, ratio in enumerate(AUTHORS_CLASS_RATIOS):
        members = (targets == c).nonzero().squeeze(1)
        chosen = members[torch.randperm(members.numel(), generator=gen)[: int(ratio * members.numel())]]
        keep += chosen.tolist()
    keep.sort()
    return DatasetSplits(Subset(splits.pool, keep), Subset(splits.pool_eval, keep), splits.val, splits.test,
                         splits.num_classes)


def _same_view(a: Dataset, b: Dataset) -> bool:
    """Two subsets of one dataset at the same indices (the pool and pool_eval of a limited pool)."""
    return isinstance(a, Subset) and isinstance(b, Subset) and a.dataset is b.dataset and a.indices == b.indices


@overload
def materialize(dataset: Dataset) -> Dataset: ...
@overload
def materialize(dataset: None) -> None: ...
def materialize(dataset: Dataset | None) -> Dataset | None:
    """``(input, target)`` samples decoded once into a ``TensorDataset`` (same values, no per-item work)."""
    if dataset is None or isinstance(dataset, TensorDataset):
        return dataset
    inputs, targets = [], []
    for batch in DataLoader(dataset, batch_size=1024):
        inputs.append(batch[0])
        targets.append(batch[1])
    return TensorDataset(torch.cat(inputs), torch.cat(targets))
