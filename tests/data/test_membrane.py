"""The ISBI 2012 membrane builder and DataModule, on tiny PNGs in the real layout (30 slices of 32x32, tile 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_dynamical.data import MembraneDataModule
from lightning_dynamical.data.membrane import build_membrane
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.tasks import Segmentation

SLICES, SIZE, TILE = 30, 32, 16
PER_SLICE = (SIZE // TILE) ** 2


def write_membrane(root: Path, slices: int = SLICES, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``<root>/membrane/{image,label}/<k>.png``: random 8-bit images and 0/255 masks; returns both as arrays."""
    gen = np.random.default_rng(0)
    images = gen.integers(0, 256, (slices, size, size), dtype=np.uint8)
    masks = np.where(gen.random((slices, size, size)) < 0.7, 255, 0).astype(np.uint8)
    for sub in ("image", "label"):
        (root / "membrane" / sub).mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        Image.fromarray(images[k]).save(root / "membrane" / "image" / f"{k}.png")
        Image.fromarray(masks[k]).save(root / "membrane" / "label" / f"{k}.png")
    return images, masks


def reassemble(dataset, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice ``k`` put back together from the dataset's tiles."""
    image, mask = torch.zeros(SIZE, SIZE), torch.zeros(SIZE, SIZE, dtype=torch.long)
    for i, (slice_k, top, left) in enumerate(dataset.origins):
        if slice_k == k:
            x, y = dataset[i]
            image[top: top + TILE, left: left + TILE] = x[0]
            mask[top: top + TILE, left: left + TILE] = y
    return image, mask


def test_split_is_by_slice_and_tiles_reassemble(tmp_path: Path) -> None:
    images, masks = write_membrane(tmp_path)
    splits = build_membrane(tmp_path, tile=TILE, test_slices=6, val_slices=4)
    assert splits.num_classes == 2 and splits.pool is splits.pool_eval
    parts = {"pool": (splits.pool, range(20)), "val": (splits.val, range(20, 24)), "test": (splits.test, range(24, 30))}
    for dataset, ks in parts.values():
        assert len(dataset) == len(ks) * PER_SLICE
        assert sorted({k for k, _, _ in dataset.origins}) == list(ks)
    pool = images[:20].astype(np.float64)
    mean, std = pool.mean(), pool.std(ddof=1)
    x, y = splits.pool[0]
    assert x.shape == (1, TILE, TILE) and x.dtype == torch.float32 and y.shape == (TILE, TILE) and y.dtype == torch.long
    for dataset, ks in parts.values():
        for k in (ks[0], ks[-1]):
            image, mask = reassemble(dataset, k)
            torch.testing.assert_close(image, torch.from_numpy((images[k] - mean) / std).float())
            assert torch.equal(mask, torch.from_numpy(masks[k] // 255).long())  # 0 -> 0 (membrane), 255 -> 1
    stats = torch.cat([splits.pool_eval[i][0].flatten() for i in range(len(splits.pool_eval))])
    assert abs(stats.mean().item()) < 1e-5 and abs(stats.std().item() - 1) < 1e-4  # normalised by the pool


def test_default_split_and_no_test(tmp_path: Path) -> None:
    write_membrane(tmp_path)
    splits = build_membrane(tmp_path, tile=TILE)
    assert (len(splits.pool), splits.val, len(splits.test)) == (24 * PER_SLICE, None, 6 * PER_SLICE)
    assert build_membrane(tmp_path, tile=SIZE, test_slices=0).test is None


def test_bad_mask_value_names_the_file(tmp_path: Path) -> None:
    _, masks = write_membrane(tmp_path)
    bad = masks[7].copy()
    bad[3, 5] = 128
    Image.fromarray(bad).save(tmp_path / "membrane" / "label" / "7.png")
    with pytest.raises(ValueError, match=r"label/7\.png: mask values must be 0 .* or 255 .*found \[128\]"):
        build_membrane(tmp_path, tile=TILE)


@pytest.mark.parametrize("tile", [12, 64])
def test_tile_must_divide_the_slice(tmp_path: Path, tile: int) -> None:
    write_membrane(tmp_path)
    with pytest.raises(ConfigError, match=f"tile={tile} must divide the slice size 32x32"):
        build_membrane(tmp_path, tile=tile)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tile": 0}, "tile must be a positive int"),
    ({"test_slices": -1}, "test_slices must be an int >= 0"),
    ({"test_slices": 20, "val_slices": 10}, "leave no pool slice out of the 30 slices"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    write_membrane(tmp_path)
    with pytest.raises(ConfigError, match=message):
        build_membrane(tmp_path, **kwargs)


def test_augment_flips_image_and_mask_together(tmp_path: Path) -> None:
    write_membrane(tmp_path)
    splits = build_membrane(tmp_path, tile=TILE, augment=True)
    assert splits.pool is not splits.pool_eval and splits.pool.origins == splits.pool_eval.origins
    x0, y0 = splits.pool_eval[3]
    flips = {(False, False): (x0, y0), (True, False): (x0.flip(-1), y0.flip(-1)),
             (False, True): (x0.flip(-2), y0.flip(-2)), (True, True): (x0.flip(-1, -2), y0.flip(-1, -2))}
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        x, y = splits.pool[3]
        matches = [f for f, (fx, fy) in flips.items() if torch.equal(x, fx)]
        assert len(matches) == 1 and torch.equal(y, flips[matches[0]][1])  # the mask got the image's flip
        seen.add(matches[0])
    assert seen == set(flips)
    assert all(torch.equal(splits.pool_eval[3][0], x0) for _ in range(5))  # pool_eval never augments


def test_missing_folder_and_label_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"membrane not found: data root '{tmp_path}' .* has no membrane files at "
                                          f"{tmp_path}/membrane; set root to the folder that holds membrane/"):
        build_membrane(tmp_path)
    with pytest.raises(ConfigError, match=f"data root '{tmp_path / 'x'}' .* does not exist"):
        build_membrane(tmp_path / "x")
    write_membrane(tmp_path)
    (tmp_path / "membrane" / "label" / "4.png").unlink()
    with pytest.raises(ConfigError, match=r"label file .*label/4\.png is missing"):
        build_membrane(tmp_path, tile=TILE)


def test_datamodule(tmp_path: Path) -> None:
    write_membrane(tmp_path)
    datamodule = MembraneDataModule(root=str(tmp_path), tile=TILE, val_slices=2, initial_size=4, batch_size=4,
                                    eval_batch_size=8)
    datamodule.setup("fit")
    assert datamodule.num_unlabeled == 22 * PER_SLICE - 4 and datamodule.num_classes == 2
    assert isinstance(datamodule.task, Segmentation)
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape == (4, 1, TILE, TILE) and y.shape == (4, TILE, TILE) and y.dtype == torch.long
    assert len(datamodule.val_dataloader().dataset) == 2 * PER_SLICE
    with pytest.raises(ConfigError, match="balanced=True draws the initial set per class.*segmentation task has none"):
        MembraneDataModule(root=str(tmp_path), balanced=True)
