"""Seeded, class-stratified hold-out splits for data sets without an official split."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_dynamical.errors import ConfigError


def stratified_holdout(targets: Sequence[int], fraction: float, seed: int = 0,
                       name: str = "fraction") -> tuple[list[int], list[int]]:
    """Split ``range(len(targets))`` into ``(kept, held_out)``, both sorted.

    ``round(fraction * n_c)`` samples of every class ``c`` are held out, so rare classes keep their share
    (Caltech101's classes range from 31 to 800 images). The same ``seed`` gives the same split. ``name`` is the
    caller's argument for ``fraction``, used in the error message.
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"{name} must be in [0, 1), got {fraction!r}")
    labels = torch.as_tensor(list(targets), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    held: list[int] = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        held += members[: round(fraction * len(members))].tolist()
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)
