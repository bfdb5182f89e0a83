"""Training (augmenting) and evaluation (deterministic) transforms for the image builders."""

from __future__ import annotations

from PIL import Image
from torchvision import transforms as T

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
MNIST_STATS = ((0.1307,), (0.3081,))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (Caltech101 has grayscale images) to RGB so batches stack."""
    return image.convert("RGB")


def normalized(stats: Stats) -> T.Compose:
    """``ToTensor`` then per-channel normalisation: the evaluation transform of fixed-size data sets."""
    return T.Compose([T.ToTensor(), T.Normalize(*stats)])


def padded_crop(stats: Stats, size: int = 32, flip: bool = True, padding: int = 4) -> T.Compose:
    """Random ``size`` crop after ``padding``-pixel zero padding (and horizontal flip): the CIFAR/SVHN (4 pixels)
    and MNIST (2 pixels, no flip) augmentation."""
    steps: list = [T.RandomCrop(size, padding=padding)]
    if flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(*stats)])


def resized(image_size: int, stats: Stats = IMAGENET_STATS, augment: bool = False) -> T.Compose:
    """RGB images of any size to ``image_size`` squares.

    Evaluation: resize the short side, centre crop. Training (``augment``): random resized crop + flip.
    """
    if augment:
        steps: list = [T.RandomResizedCrop(image_size, scale=(0.35, 1.0)), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(image_size), T.CenterCrop(image_size)]
    return T.Compose([T.Lambda(to_rgb), *steps, T.ToTensor(), T.Normalize(*stats)])
