"""Data builders, DataModules and YAML configs, on tiny files written in each data set's real on-disk format."""

from __future__ import annotations

import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from lightning_dynamical.data.caltech101 import build_caltech101
from lightning_dynamical.data.cifar10 import build_cifar10
from lightning_dynamical.data.datamodule import dataset_targets
from lightning_dynamical.data.holdout import stratified_holdout
from lightning_dynamical.data.image_folder import build_image_folder
from lightning_dynamical.data.mnist import build_mnist
from lightning_dynamical.data.modules import (
    Caltech101DataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    SVHNDataModule,
)
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.data.svhn import build_svhn
from lightning_dynamical.data.transforms import CIFAR10_STATS, MNIST_STATS
from lightning_dynamical.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def _exists_only(fpath: str | os.PathLike, md5: str | None = None) -> bool:
    return os.path.isfile(fpath)


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR10 and SVHN md5-check their files (CIFAR10 in ``_check_integrity`` and again in ``_load_meta``),
    which tiny fakes cannot pass. Patching the module-level ``check_integrity`` they both call keeps the
    file-existence check and skips only the md5 (patching ``CIFAR10._check_integrity`` alone would still
    fail on ``batches.meta``); faking md5 collisions is not an option."""
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", _exists_only)
    monkeypatch.setattr("torchvision.datasets.svhn.check_integrity", _exists_only)


# ---- writers of the real on-disk formats ---------------------------------------------------------------
def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6) -> tuple[np.ndarray, list[int]]:
    """``cifar-10-batches-py/``: pickled dicts with ``data`` (N, 3072) uint8 rows in CHW order, ``labels``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_rows, train_labels = [], []
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": rows, "labels": labels}, f)
        if name.startswith("data_batch"):
            train_rows.append(rows)
            train_labels += labels
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)
    return np.concatenate(train_rows).reshape(-1, 3, 32, 32), train_labels


def write_svhn(root: Path, n_train: int = 12, n_test: int = 5) -> list[int]:
    """``train_32x32.mat`` / ``test_32x32.mat``: ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1) with 10 for digit 0."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    train_labels = []
    for name, n in [("train_32x32.mat", n_train), ("test_32x32.mat", n_test)]:
        y = np.arange(1, n + 1).reshape(-1, 1) % 10 + 1  # 1..10, so label 10 (digit 0) occurs
        scipy.io.savemat(root / name, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                       "y": y.astype(np.uint8)})
        if name.startswith("train"):
            train_labels = [int(v) % 10 for v in y.ravel()]
    return train_labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file: magic ``0x00 0x00 0x08 ndim`` (uint8 data), big-endian int32 dims, raw bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 | array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 12, n_test: int = 5) -> tuple[np.ndarray, list[int]]:
    """``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    images = {}
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        images[prefix] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[prefix])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return images["train"], [i % 10 for i in range(n_train)]


def write_image(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> None:
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)


def write_caltech101(root: Path, per_class: int = 5) -> None:
    """``caltech101/101_ObjectCategories/<class>/image_0001.jpg ...``, numbered from 1 as torchvision expects.

    torchvision drops the ``BACKGROUND_Google`` folder (it must exist); ``Annotations/`` is only read for
    ``target_type="annotation"``. Sizes vary and one image is grayscale, as in the real data set.
    """
    categories = root / "caltech101" / "101_ObjectCategories"
    for c, name in enumerate(["BACKGROUND_Google", "Faces", "accordion", "airplanes"]):
        (categories / name).mkdir(parents=True)
        for i in range(1, (1 if name.startswith("BACKGROUND") else per_class) + 1):
            mode = "L" if (name, i) == ("accordion", 2) else "RGB"
            write_image(categories / name / f"image_{i:04d}.jpg", (20 + 7 * i, 30 + 3 * c), mode, seed=10 * c + i)


def write_image_folder(folder: Path, classes: list[str], per_class: int, ext: str = "png") -> None:
    """``<folder>/<class>/<n>.<ext>``: ImageFolder's class-per-folder layout, mixed sizes and modes."""
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            write_image(folder / name / f"{i}.{ext}", (16 + 4 * i, 24), "L" if i == 0 else "RGB", seed=c * 100 + i)


# ---- shared checks -------------------------------------------------------------------------------------
def labels_of(dataset: torch.utils.data.Dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


def assert_aligned(splits: DatasetSplits, shape: tuple[int, ...]) -> None:
    """``pool``/``pool_eval``: same samples, same order, right shapes; the evaluation transform is deterministic."""
    assert len(splits.pool) == len(splits.pool_eval) > 0
    labels = labels_of(splits.pool_eval)
    assert labels_of(splits.pool) == labels
    assert dataset_targets(splits.pool).tolist() == labels
    assert dataset_targets(splits.pool_eval).tolist() == labels
    assert all(0 <= y < splits.num_classes for y in labels)
    for i in range(len(splits.pool)):
        x, x_eval = splits.pool[i][0], splits.pool_eval[i][0]
        assert x.shape == x_eval.shape == shape and x.dtype == torch.float32
    assert torch.equal(splits.pool_eval[0][0], splits.pool_eval[0][0])


def assert_augments(splits: DatasetSplits, index: int = 0, draws: int = 8) -> None:
    """The training transform is random: some draw of ``pool[index]`` differs from the evaluation view."""
    torch.manual_seed(0)
    reference = splits.pool_eval[index][0]
    assert any(not torch.equal(splits.pool[index][0], reference) for _ in range(draws))


# ---- builders ------------------------------------------------------------------------------------------
def test_cifar10(tmp_path: Path, skip_md5: None) -> None:
    images, labels = write_cifar10(tmp_path)
    splits = build_cifar10(tmp_path)
    assert (len(splits.pool), len(splits.test), splits.val, splits.num_classes) == (20, 6, None, 10)
    assert labels_of(splits.pool) == labels
    assert_aligned(splits, (3, 32, 32))
    assert_augments(splits)
    mean, std = (torch.tensor(s).view(3, 1, 1) for s in CIFAR10_STATS)
    expected = (torch.from_numpy(images[7]).float() / 255 - mean) / std
    torch.testing.assert_close(splits.pool_eval[7][0], expected)

    plain = build_cifar10(tmp_path, augment=False)
    assert torch.equal(plain.pool[3][0], plain.pool_eval[3][0])


def test_svhn_maps_label_10_to_0(tmp_path: Path, skip_md5: None) -> None:
    labels = write_svhn(tmp_path)
    splits = build_svhn(tmp_path)
    assert (len(splits.pool), len(splits.test), splits.num_classes) == (12, 5, 10)
    assert labels_of(splits.pool) == labels and 0 in labels
    assert_aligned(splits, (3, 32, 32))
    assert_augments(splits)


def test_mnist(tmp_path: Path) -> None:
    images, labels = write_mnist(tmp_path)
    splits = build_mnist(tmp_path)
    assert (len(splits.pool), len(splits.test), splits.num_classes) == (12, 5, 10)
    assert labels_of(splits.pool) == labels
    assert_aligned(splits, (1, 28, 28))
    (mean,), (std,) = MNIST_STATS
    torch.testing.assert_close(splits.pool[4][0][0], (torch.from_numpy(images[4]).float() / 255 - mean) / std)


def test_missing_files_name_the_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"MNIST not found: data root '{tmp_path}' .* has no MNIST files at "
                                          f"{tmp_path}/MNIST/raw.*download: true"):
        build_mnist(tmp_path)
    with pytest.raises(ConfigError, match=f"CIFAR-10 not found: data root '{tmp_path / 'x'}' .* does not exist"):
        build_cifar10(tmp_path / "x")
    with pytest.raises(ConfigError, match=f"image folder root '{tmp_path / 'x'}' .* does not exist"):
        build_image_folder(tmp_path / "x")


def test_files_that_fail_torchvisions_check_are_called_corrupt_not_missing(tmp_path: Path) -> None:
    write_cifar10(tmp_path)  # real format, but not the real files: their MD5 sums differ
    with pytest.raises(ConfigError, match=r"CIFAR-10 under data root .* is incomplete or corrupt: "
                                          r".*cifar-10-batches-py exist but were refused "
                                          r".*copy the original cifar-10-batches-py/ into"):
        build_cifar10(tmp_path)
    write_svhn(tmp_path / "svhn")
    with pytest.raises(ConfigError, match=r"SVHN under data root .* is incomplete or corrupt: .*train_32x32.mat, "
                                          r".*test_32x32.mat exist"):
        build_svhn(tmp_path / "svhn")


def test_caltech101_refuses_what_torchvision_would_misread(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Caltech101 not found: .* does not exist"):
        build_caltech101(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()  # torchvision would have created <root>/caltech101
    write_caltech101(tmp_path)
    categories = tmp_path / "caltech101" / "101_ObjectCategories"
    (categories / "Faces" / ".DS_Store").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"Faces must hold image_0001.jpg to image_0006.jpg only .*found .DS_Store"):
        build_caltech101(tmp_path)
    (categories / "Faces" / ".DS_Store").unlink()
    (categories / "Thumbs.db").write_bytes(b"")
    with pytest.raises(ConfigError, match="must hold only category folders; remove Thumbs.db"):
        build_caltech101(tmp_path)
    (categories / "Thumbs.db").unlink()
    (categories / "BACKGROUND_Google" / "image_0001.jpg").unlink()
    (categories / "BACKGROUND_Google").rmdir()
    with pytest.raises(ConfigError, match="has no BACKGROUND_Google folder"):
        build_caltech101(tmp_path)
    (categories / "BACKGROUND_Google").mkdir()
    assert build_caltech101(tmp_path, image_size=24).num_classes == 3


def test_caltech101_split_and_grayscale(tmp_path: Path) -> None:
    write_caltech101(tmp_path)
    splits = build_caltech101(tmp_path, image_size=24, test_fraction=0.2, seed=0)
    assert splits.num_classes == 3  # BACKGROUND_Google is not a class
    assert (len(splits.pool), len(splits.test)) == (12, 3)
    assert sorted(labels_of(splits.test)) == [0, 1, 2]  # stratified: one per class
    assert_aligned(splits, (3, 24, 24))  # includes the grayscale image, converted to RGB
    assert all(x.shape == (3, 24, 24) for x, _ in splits.test)
    assert_augments(splits)
    again = build_caltech101(tmp_path, image_size=24, seed=0)
    assert again.pool.indices == splits.pool.indices
    assert set(again.pool.indices).isdisjoint(splits.test.indices)
    other = build_caltech101(tmp_path, image_size=24, seed=1)
    assert other.test.indices != splits.test.indices


def test_image_folder_single_folder_is_split(tmp_path: Path) -> None:
    write_image_folder(tmp_path, ["cat", "dog"], per_class=5)
    splits = build_image_folder(tmp_path, image_size=16, val_fraction=0.25, test_fraction=0.2, seed=3)
    assert splits.num_classes == 2
    assert (len(splits.pool), len(splits.val), len(splits.test)) == (6, 2, 2)
    parts = [set(splits.pool.indices), set(splits.val.indices), set(splits.test.indices)]
    assert set.union(*parts) == set(range(10)) and sum(map(len, parts)) == 10
    assert_aligned(splits, (3, 16, 16))
    assert splits.val[0][0].shape == (3, 16, 16)


def test_image_folder_train_val_test_folders(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", ["a", "b", "c"], per_class=3, ext="jpg")
    write_image_folder(tmp_path / "test", ["a", "b", "c"], per_class=2)
    splits = build_image_folder(tmp_path, image_size=12)
    assert (len(splits.pool), splits.val, len(splits.test), splits.num_classes) == (9, None, 6, 3)
    assert labels_of(splits.test) == [0, 0, 1, 1, 2, 2]
    assert_aligned(splits, (3, 12, 12))

    write_image_folder(tmp_path / "val", ["a", "b"], per_class=1)
    with pytest.raises(ValueError, match="classes"):
        build_image_folder(tmp_path, image_size=12)


def test_stratified_holdout() -> None:
    targets = [0] * 10 + [1] * 4 + [2]
    kept, held = stratified_holdout(targets, 0.5, seed=0)
    assert sorted(kept + held) == list(range(15))
    assert [sum(targets[i] == c for i in held) for c in range(3)] == [5, 2, 0]
    assert stratified_holdout(targets, 0.5, seed=0) == (kept, held)
    assert stratified_holdout(targets, 0.0) == (list(range(15)), [])
    with pytest.raises(ValueError):
        stratified_holdout(targets, 1.0)


# ---- DataModules ---------------------------------------------------------------------------------------
def check_loaders(datamodule, pool_size: int, shape: tuple[int, ...], initial_size: int = 4) -> None:
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.num_labeled == initial_size
    assert datamodule.num_unlabeled == pool_size - initial_size
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape[1:] == shape and x.dtype == torch.float32 and y.dtype == torch.long
    x, _ = next(iter(datamodule.pool_dataloader()))
    assert x.shape[1:] == shape
    assert len(datamodule.pool_dataset()) == pool_size - initial_size
    x, _ = next(iter(datamodule.test_dataloader()))
    assert x.shape[1:] == shape


LOADER_ARGS = {"initial_size": 4, "batch_size": 4, "eval_batch_size": 8}


def test_datamodule_cifar10(tmp_path: Path, skip_md5: None) -> None:
    write_cifar10(tmp_path)
    check_loaders(CIFAR10DataModule(root=str(tmp_path), **LOADER_ARGS), 20, (3, 32, 32))


def test_datamodule_svhn(tmp_path: Path, skip_md5: None) -> None:
    write_svhn(tmp_path)
    check_loaders(SVHNDataModule(root=str(tmp_path), balanced=True, **LOADER_ARGS), 12, (3, 32, 32))


def test_datamodule_mnist(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    check_loaders(MNISTDataModule(root=str(tmp_path), **LOADER_ARGS), 12, (1, 28, 28))


def test_datamodule_caltech101(tmp_path: Path) -> None:
    write_caltech101(tmp_path)
    check_loaders(Caltech101DataModule(root=str(tmp_path), image_size=20, **LOADER_ARGS), 12, (3, 20, 20))


def test_datamodule_image_folder(tmp_path: Path) -> None:
    write_image_folder(tmp_path, ["cat", "dog"], per_class=5)
    datamodule = ImageFolderDataModule(root=str(tmp_path), image_size=16, val_fraction=0.25, **LOADER_ARGS)
    check_loaders(datamodule, 6, (3, 16, 16))
    assert len(datamodule.val_dataloader().dataset) == 2


def test_datamodule_digits_holds_out_validation() -> None:
    datamodule = DigitsDataModule(initial_size=20, val_size=100, seed=1)
    check_loaders(datamodule, 1400 - 100, (1, 8, 8), initial_size=20)
    assert len(datamodule.val_dataloader().dataset) == 100
    assert len(datamodule.splits.test) == 397
    reseeded = DigitsDataModule(initial_size=20, seed=2)
    assert torch.equal(reseeded.splits.test.tensors[1], datamodule.splits.test.tensors[1])  # split_seed fixed
    assert reseeded.labeled_indices != datamodule.labeled_indices


# ---- configs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config_parses(config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Every shipped config parses and validates through the CLI (``--print_config`` exits before fitting)."""
    from lightning_dynamical.cli.app import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["lightning-dynamical"])  # pytest's own arguments are not the CLI's
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path: lightning_dynamical" in capsys.readouterr().out
