"""Any class-per-folder image data set through ``torchvision.datasets.ImageFolder``."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder

from lightning_dynamical.data.holdout import stratified_holdout
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.transforms import resized
from lightning_dynamical.data.views import TransformedView
from lightning_dynamical.errors import ConfigError

SPLIT_DIRS = ("train", "val", "test")


def build_image_folder(root: str | Path, image_size: int = 224, val_fraction: float = 0.0,
                       test_fraction: float = 0.2, seed: int = 0, augment: bool = True) -> DatasetSplits:
    """Images in ``root/<class>/*`` or, when ``root/train/`` exists, ``root/{train,val,test}/<class>/*``.

    With ``train/``, the optional ``val/`` and ``test/`` folders are the validation and test sets (they
    must list the same classes) and the fractions are ignored. With a single folder, ``test_fraction``
    then ``val_fraction`` of every class are held out with ``seed``. Images are converted to RGB, resized
    to ``image_size`` squares and normalised with ImageNet statistics; ``pool`` also applies a random
    resized crop and flip (``augment=True``).
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"image folder root {str(root)!r} ({root.resolve()}) does not exist; set root to a folder "
                          "with one sub-folder of images per class")
    evaluation = resized(image_size)
    training = resized(image_size, augment=True) if augment else evaluation
    if (root / "train").is_dir():
        train = ImageFolder(str(root / "train"))
        others = {name: _matching(root / name, train.classes) for name in SPLIT_DIRS[1:]}
        pool: list[int] | None = None
        val, test = (None if ds is None else TransformedView(ds, ds.targets, evaluation) for ds in others.values())
    else:
        train = ImageFolder(str(root))
        rest, test_idx = stratified_holdout(train.targets, test_fraction, seed, "test_fraction")
        kept, val_idx = stratified_holdout([train.targets[i] for i in rest], val_fraction, seed + 1,
                                            "val_fraction")
        pool = [rest[i] for i in kept]
        val = TransformedView(train, train.targets, evaluation, [rest[i] for i in val_idx]) if val_idx else None
        test = TransformedView(train, train.targets, evaluation, test_idx) if test_idx else None
    return DatasetSplits(
        pool=TransformedView(train, train.targets, training, pool),
        pool_eval=TransformedView(train, train.targets, evaluation, pool),
        val=val,
        test=test,
        num_classes=len(train.classes),
    )


def _matching(folder: Path, classes: list[str]) -> ImageFolder | None:
    """``folder`` as an ImageFolder whose classes must equal the training classes (label ids must agree)."""
    if not folder.is_dir():
        return None
    dataset = ImageFolder(str(folder))
    if dataset.classes != classes:
        raise ConfigError(f"{folder} has classes {dataset.classes[:5]}..., expected the training classes "
                         f"{classes[:5]}... ({len(dataset.classes)} vs {len(classes)})")
    return dataset
