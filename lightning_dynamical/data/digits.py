"""scikit-learn's handwritten digits (1,797 8x8 images, shipped inside scikit-learn): the embedded default."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from lightning_dynamical.data.splits import DatasetSplits
from lightning_dynamical.errors import ConfigError


def build_digits(test_size: int = 397, seed: int = 0) -> DatasetSplits:
    """Digits as ``(1, 8, 8)`` float tensors scaled to [0, 1]; a seeded split holds out ``test_size`` samples."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    if not 0 < test_size < len(y):
        raise ConfigError(f"test_size must be an int from 1 to {len(y) - 1}, got {test_size!r}")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test, pool = order[:test_size], order[test_size:].sort().values
    pool_ds = TensorDataset(x[pool], y[pool])
    return DatasetSplits(pool=pool_ds, pool_eval=pool_ds, val=None, test=TensorDataset(x[test], y[test]),
                         num_classes=10)
