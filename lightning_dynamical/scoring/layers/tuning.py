"""Pick the fastest of several exact algorithms for a call signature by timing each once."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import torch

T = TypeVar("T")


class Tuner:
    """Caches, per signature, which algorithm ran fastest; all candidates must give the same result.

    On the first call with a new signature each candidate runs once untimed (absorbing one-off setup such
    as kernel selection) and ``repeats`` times timed; the best time decides, and the fastest candidate's
    result is returned. Results of different algorithms differ only by rounding.
    """

    def __init__(self, repeats: int = 2, max_entries: int = 4096) -> None:
        self.repeats = repeats
        self.max_entries = max_entries
        self.choices: dict[Hashable, str] = {}

    def run(self, key: Hashable, candidates: Mapping[str, Callable[[], T]], device: torch.device) -> T:
        """The result of the (known or measured) fastest candidate for ``key``."""
        if len(candidates) == 1:
            return next(iter(candidates.values()))()
        chosen = self.choices.get(key)
        if chosen in candidates:
            return candidates[chosen]()
        timings, results = {}, {}
        for name, fn in candidates.items():
            fn()
            _synchronize(device)
            timings[name] = math.inf
            for _ in range(self.repeats):
                start = time.perf_counter()
                results[name] = fn()
                _synchronize(device)
                timings[name] = min(timings[name], time.perf_counter() - start)
        chosen = min(timings, key=timings.__getitem__)
        if len(self.choices) >= self.max_entries:
            self.choices.clear()
        self.choices[key] = chosen
        return results[chosen]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
