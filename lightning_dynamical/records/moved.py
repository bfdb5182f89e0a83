"""Module paths from before the package was grouped into folders, still importable.

Checkpoints, pickles and configs written by earlier versions may name a module such as
``lightning_dynamical.pool``; :func:`install` adds a finder that answers such a name with today's module (the same
module object, so classes compare equal and pickles load).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

MOVED: dict[str, str] = {
    "batches": "tasks.batches",
    "bench": "bench.command",
    "callback": "loop.callback",
    "cli": "cli.app",
    "clock": "reporting.clock",
    "console": "reporting.console",
    "convergence": "loop.convergence",
    "distributed": "loop.distributed",
    "doc": "cli.doc",
    "evaluator": "loop.evaluator",
    "faults": "records.faults",
    "interrupts": "loop.interrupts",
    "label_studio": "oracles.label_studio",
    "labeling": "loop.labeling",
    "labels": "oracles.files",
    "migrate": "records.migrate",
    "module": "models.classifier",
    "oracle": "oracles.base",
    "pending": "loop.pending",
    "pool": "data.datamodule",
    "pool_scorer": "loop.pool_scorer",
    "preflight": "cli.preflight",
    "queries": "records.queries",
    "reporting": "reporting.charts",
    "resume": "cli.resume",
    "rng": "records.rng",
    "run_records": "records.run",
    "seeds": "records.rng",
    "splits": "data.splits",
    "stopping": "loop.stopping",
    "summary": "reporting.summary",
    "train_loader": "loop.train_loader",
    "wandb_link": "reporting.wandb_runs",
    "weights": "records.weights",
}
"""Old module (below ``lightning_dynamical``) -> today's. ``records``, ``cli``, ``bench`` and ``reporting`` are
packages now; their old top-level names resolve to the package, whose module is given for reference only."""

_PACKAGE = __name__.split(".")[0]
_PACKAGES_NOW = {"records", "cli", "bench", "reporting"}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The module is today's, already executed."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, name = fullname.partition(".")
        if prefix != _PACKAGE or name not in MOVED or name in _PACKAGES_NOW:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(f"{_PACKAGE}.{MOVED[name]}"))


def install() -> None:
    """Add the finder once (importing the package does this)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
