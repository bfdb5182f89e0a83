"""ISBI 2012 EM membrane segmentation: 30 serial 512x512 grayscale slices with binary masks, cut into square tiles.

The split is by slice, not by tile: neighbouring tiles of one slice (and neighbouring slices) are strongly correlated,
so a tile-level split would leak the test set into the pool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from lightning_dynamical.data.missing import dataset_files
from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.errors import ConfigError, check_positive_int

MASK_VALUES = {0: 0, 255: 1}
"""Mask pixel value -> class: 0 = membrane, 255 = cell interior."""


class MembraneTiles(Dataset):
    """``(image, mask)`` tiles held in memory: ``image`` float32 ``(1, tile, tile)``, ``mask`` int64 ``(tile, tile)``.

    ``origins[i]`` is tile ``i``'s ``(slice k, top, left)`` in pixels. ``augment=True`` flips image and mask together,
    horizontally and vertically, each with probability 1/2 (torch's global RNG, as torchvision's transforms do).
    There is deliberately no ``targets`` attribute: the DataModule reads ``targets`` as one class per sample (the
    class-balanced initial draw), which a per-pixel mask is not.
    """

    def __init__(self, images: Tensor, masks: Tensor, origins: list[tuple[int, int, int]],
                 augment: bool = False) -> None:
        self.images = images
        self.masks = masks
        self.origins = origins
        self.augment = augment

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.images[i], self.masks[i].long()
        if self.augment:
            flips = torch.rand(2) < 0.5
            if flips[0]:
                image, mask = image.flip(-1), mask.flip(-1)
            if flips[1]:
                image, mask = image.flip(-2), mask.flip(-2)
        return image, mask

    def with_augment(self, augment: bool) -> MembraneTiles:
        """The same tiles (shared storage, same order) with or without flips."""
        return MembraneTiles(self.images, self.masks, self.origins, augment)


def build_membrane(root: str | Path, tile: int = 128, test_slices: int = 6, val_slices: int = 0,
                   augment: bool = False) -> DatasetSplits:
    """The membrane data set from ``<root>/membrane/image/<k>.png`` and ``<root>/membrane/label/<k>.png``.

    Slices are ordered by ``k``: the last ``test_slices`` are the test set, the ``val_slices`` before them the
    validation set (``None`` when 0), the rest the pool. Every slice is cut into non-overlapping ``tile`` x ``tile``
    tiles (slice by slice, row-major). Images are normalised with the mean and standard deviation of the pool slices'
    pixels; masks map 0 -> 0 (membrane) and 255 -> 1 (interior). ``augment=True`` flips the pool's tiles at random
    (``pool_eval``, ``val`` and ``test`` never augment). Two classes.

    Raises:
        ConfigError: ``root`` has no ``membrane/`` slices, a label file is missing, an image is not 8-bit grayscale,
            a mask holds a value other than 0 and 255, the slices differ in size, ``tile`` does not divide the slice
            size, or the splits leave no pool slice.
    """
    check_positive_int("tile", tile)
    for name, value in (("test_slices", test_slices), ("val_slices", val_slices)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    folder = Path(root) / "membrane"
    with dataset_files("membrane", root, "membrane/"):
        numbers = _slice_numbers(folder / "image")
    if test_slices + val_slices >= len(numbers):
        raise ConfigError(f"test_slices={test_slices} and val_slices={val_slices} leave no pool slice out of the "
                          f"{len(numbers)} slices in {folder}")
    first = _read_image(folder / "image" / f"{numbers[0]}.png")
    height, width = first.shape
    if height % tile or width % tile:
        divisors = [d for d in range(1, min(height, width) + 1) if height % d == 0 and width % d == 0]
        raise ConfigError(f"tile={tile} must divide the slice size {height}x{width}; divisors: {divisors}")
    images = torch.stack([first, *(_read_image(folder / "image" / f"{k}.png", (height, width)) for k in numbers[1:])])
    masks = torch.stack([_read_mask(folder / "label" / f"{k}.png", (height, width)) for k in numbers])
    n_pool = len(numbers) - test_slices - val_slices
    pool_pixels = images[:n_pool].double()
    mean, std = pool_pixels.mean().item(), pool_pixels.std().item()
    images = ((images - mean) / (std if std > 0 else 1.0)).float()

    def part(start: int, stop: int) -> MembraneTiles:
        return _tiles(images[start:stop], masks[start:stop], numbers[start:stop], tile)

    pool_eval = part(0, n_pool)
    return DatasetSplits(
        pool=pool_eval.with_augment(True) if augment else pool_eval,
        pool_eval=pool_eval,
        val=part(n_pool, n_pool + val_slices) if val_slices else None,
        test=part(n_pool + val_slices, len(numbers)) if test_slices else None,
        num_classes=2,
    )


def _slice_numbers(image_dir: Path) -> list[int]:
    """The ``k`` of every ``<k>.png`` in ``image_dir``, ascending; a ``RuntimeError`` "not found" when there is none
    (:func:`dataset_files` turns it into a :class:`ConfigError` naming the path)."""
    numbers = sorted(int(p.stem) for p in image_dir.glob("*.png") if p.stem.isdigit()) if image_dir.is_dir() else []
    if not numbers:
        raise RuntimeError(f"Dataset not found: no <k>.png slices in {image_dir}")
    return numbers


def _read_image(path: Path, shape: tuple[int, int] | None = None) -> Tensor:
    """An 8-bit grayscale slice as float32 ``(H, W)`` in ``[0, 255]``; ``shape``, when given, is the first slice's."""
    with Image.open(path) as image:
        if image.mode != "L":
            raise ConfigError(f"{path}: expected an 8-bit grayscale PNG (mode L), got mode {image.mode}")
        pixels = torch.from_numpy(np.array(image, dtype=np.float32))
    if shape is not None and tuple(pixels.shape) != shape:
        raise ConfigError(f"{path}: slice of shape {tuple(pixels.shape)}, expected the first slice's {shape}")
    return pixels


def _read_mask(path: Path, shape: tuple[int, int]) -> Tensor:
    """A mask as uint8 ``(H, W)`` classes (0 = membrane, 1 = interior); ``shape`` is its slice's."""
    if not path.is_file():
        raise ConfigError(f"membrane label file {path} is missing (every image/<k>.png needs label/<k>.png)")
    with Image.open(path) as image:
        values = np.array(image.convert("L") if image.mode == "1" else image)
    if values.shape != shape:
        raise ConfigError(f"{path}: mask of shape {values.shape}, expected the slices' {shape}")
    found = np.unique(values)
    bad = [int(v) for v in found if int(v) not in MASK_VALUES]
    if bad:
        raise ConfigError(f"{path}: mask values must be 0 (membrane) or 255 (interior), found {bad[:10]}")
    return torch.from_numpy((values == 255).astype(np.uint8))


def _tiles(images: Tensor, masks: Tensor, numbers: list[int], tile: int) -> MembraneTiles:
    """Cut ``(S, H, W)`` slices into ``(S * H/tile * W/tile)`` tiles, slice by slice, row-major within a slice."""
    s, h, w = images.shape

    def cut(x: Tensor) -> Tensor:
        return x.reshape(s, h // tile, tile, w // tile, tile).transpose(2, 3).reshape(-1, tile, tile).contiguous()

    origins = [(k, top, left) for k in numbers for top in range(0, h, tile) for left in range(0, w, tile)]
    return MembraneTiles(cut(images).unsqueeze(1), cut(masks), origins)
