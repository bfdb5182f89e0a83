"""Segmentation masks as people edit them: single-channel 8-bit PNGs, one class index per pixel, 255 unlabeled."""

from __future__ import annotations

import numpy as np
import torch
from fsspec.core import url_to_fs
from PIL import Image
from torch import Tensor

UNLABELED = 255
"""The PNG value of an unlabeled pixel (read as the task's ``ignore_index``)."""


def write_mask(path: str, mask: Tensor, ignore_index: int) -> None:
    """``mask`` (H, W) of class indices (``ignore_index`` for unlabeled pixels) as an 8-bit PNG at its own size."""
    values = mask.detach().to("cpu", torch.int64)
    values = values.where(values != ignore_index, UNLABELED)
    if bool(((values < 0) | (values > UNLABELED)).any()):
        raise ValueError(f"a mask PNG holds classes 0..{UNLABELED - 1}; this mask has {values.min()}..{values.max()}")
    fs, fs_path = url_to_fs(path)
    fs.makedirs(fs._parent(fs_path), exist_ok=True)
    with fs.open(fs_path, "wb") as f:
        Image.fromarray(values.numpy().astype(np.uint8), mode="L").save(f, format="PNG")


def read_mask(path: str, ignore_index: int, num_classes: int) -> Tensor | str:
    """The int64 ``(H, W)`` mask in ``path`` (255 becomes ``ignore_index``), or what is wrong with the file."""
    fs, fs_path = url_to_fs(path)
    if not fs.exists(fs_path):
        return "no such file"
    try:
        with fs.open(fs_path, "rb") as f, Image.open(f) as picture:
            if picture.format != "PNG":
                return f"a {picture.format} image; a mask is a PNG (lossless: a lossy format changes classes)"
            if picture.mode not in ("L", "P", "1", "I", "I;16"):
                return f"a {picture.mode} image; a mask is single-channel (class index per pixel)"
            if picture.mode == "P" and not _grey_identity(picture):
                return ("a palette image whose colours are not its indices; save it as greyscale (mode L), a class "
                        "index per pixel")
            values = torch.from_numpy(np.array(picture, dtype=np.int64))
    except OSError as err:
        return f"not a readable image ({err})"
    labeled = values != UNLABELED
    if bool((labeled & ((values < 0) | (values >= num_classes))).any()):
        bad = sorted(set(values[labeled & ((values < 0) | (values >= num_classes))].unique().tolist()))[:5]
        return f"pixel values {bad} are not classes 0..{num_classes - 1} (or {UNLABELED} for unlabeled)"
    return values.where(labeled, ignore_index)


def _grey_identity(picture: Image.Image) -> bool:
    """Whether every palette index a pixel uses shows the grey of that index (what a viewer sees is what is read)."""
    palette = picture.getpalette() or []
    used = np.unique(np.array(picture))
    return all(palette[3 * i: 3 * i + 3] == [i, i, i] for i in used.tolist())
