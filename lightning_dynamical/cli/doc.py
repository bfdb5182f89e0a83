"""``lightning-dynamical doc [NAME]``: the active-learning options with their descriptions, as config keys.

``fit --help`` lists the Trainer's options but not those of a callback inside ``trainer.callbacks``; this
command shows the loop's options, and for a strategy, oracle, data set or model its own, each under the key a
config or a ``--key value`` override uses.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Sequence

from jsonargparse import ArgumentParser

PROG = "lightning-dynamical"
LOOP = "trainer.callbacks.init_args"
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "strategies": (f"{LOOP}.strategy", ("DynamicAL", "Random", "Entropy", "Margin", "LeastConfidence", "BALD",
                                        "BADGE", "Coreset", "ALBL")),
    "oracles": (f"{LOOP}.oracle", ("DatasetOracle", "FileOracle")),
    "data sets": ("data", ("DigitsDataModule", "MNISTDataModule", "CIFAR10DataModule", "SVHNDataModule",
                           "Caltech101DataModule", "ImageFolderDataModule", "AGNewsDataModule", "MembraneDataModule",
                           "WikiANNNERDataModule", "WikiANNMultiLabelDataModule")),
    "models": ("model", ("Classifier",)),
}
_MODULES = {"data sets": "lightning_dynamical.data", "oracles": "lightning_dynamical.oracles.base"}
_HELP_FLAG = re.compile(r"^--trainer\.callbacks\.(?:init_args\.)?(strategy|oracle)\.help(?:=(.*))?$")


def class_path(group: str, name: str) -> str:
    return f"{_MODULES.get(group, 'lightning_dynamical')}.{name}"


def find(name: str) -> tuple[str, str] | None:
    """``(group, class name)`` for a class name (case-insensitive, a dotted path's last part is enough)."""
    short = name.rsplit(".", 1)[-1].lower()
    if short == "activelearningloop":
        return "loop", "ActiveLearningLoop"
    for group, (_, names) in GROUPS.items():
        for candidate in names:
            if candidate.lower() == short:
                return group, candidate
    return None


def options(group: str, name: str) -> str:
    """The options of one class, as jsonargparse prints them, under their config key."""
    if group == "loop":
        key, path = LOOP, "lightning_dynamical.ActiveLearningLoop"
    else:
        key, path = f"{GROUPS[group][0]}.init_args", class_path(group, name)
    module, _, attr = path.rpartition(".")
    parser = ArgumentParser(prog=f"{PROG} fit", usage=argparse.SUPPRESS, add_help=False,
                            description=f"{name} ({path}); set as class_path: {path} under {key.rsplit('.', 1)[0]}")
    parser.add_class_arguments(getattr(importlib.import_module(module), attr), key, sub_configs=True)
    return parser.format_help()


def overview() -> str:
    lines = [options("loop", "ActiveLearningLoop"), "Other classes (lightning-dynamical doc NAME shows the options):"]
    for group, (key, names) in GROUPS.items():
        lines.append(f"  {group + ' (' + key + ')':<42} {', '.join(names)}")
    lines.append("A config may name your own classes by class_path (your module is importable from the current "
                 "directory), e.g. class_path: mymodule.MyModel under model.")
    return "\n".join(lines)


def help_request(argv: Sequence[str]) -> list[str] | None:
    """``doc`` arguments for ``--trainer.callbacks.strategy.help NAME`` (and ``.oracle.``), which LightningCLI
    cannot answer inside the callbacks list; ``None`` for any other command line."""
    for i, arg in enumerate(argv):
        match = _HELP_FLAG.match(arg)
        if match:
            value = match.group(2)
            if value is None and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                value = argv[i + 1]
            return [value] if value else []
    return None


def main(argv: Sequence[str]) -> int:
    """``lightning-dynamical doc [NAME]``; returns the exit status."""
    if not argv:
        print(overview())
        return 0
    found = find(argv[0])
    if found is None:
        known = ", ".join(n for _, names in GROUPS.values() for n in names)
        print(f"error: unknown class {argv[0]!r}; known: ActiveLearningLoop, {known}")
        return 2
    print(options(*found))
    return 0
