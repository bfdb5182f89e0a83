"""A transformed, optionally re-indexed view of an untransformed dataset: one decoded copy, many transforms."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset


class TransformedView(Dataset):
    """Samples ``indices`` of ``dataset`` (all when ``None``) with ``transform`` applied to the input.

    ``dataset`` must return ``(input, target)`` without a transform of its own. Two views over the same
    dataset share its storage, which is how a builder gets ``pool`` (augmented) and ``pool_eval``
    (deterministic) with the same samples in the same order without loading the data twice.
    ``targets`` (integer labels aligned with the view) lets samplers read labels without decoding images.
    """

    def __init__(self, dataset: Dataset, targets: Sequence[int], transform: Callable[[Any], Any] | None = None,
                 indices: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.indices = list(range(len(targets))) if indices is None else [int(i) for i in indices]
        self.targets = [int(targets[i]) for i in self.indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x, _ = self.dataset[self.indices[i]]
        return (self.transform(x) if self.transform is not None else x), self.targets[i]
