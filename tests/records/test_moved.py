"""Module paths from before the folders (``lightning_dynamical.pool``, ``.callback``, ...) still import, as the same
module objects, so old pickles, checkpoints and ``class_path`` entries keep working."""

from __future__ import annotations

import importlib
import pickle

import pytest
from jsonargparse import ArgumentParser

import lightning_dynamical
from lightning_dynamical.records.moved import _PACKAGES_NOW, MOVED


@pytest.mark.parametrize("old", sorted(set(MOVED) - _PACKAGES_NOW))
def test_old_module_path_is_todays_module(old):
    assert importlib.import_module(f"lightning_dynamical.{old}") is importlib.import_module(
        f"lightning_dynamical.{MOVED[old]}")


def test_old_pickle_global_loads_todays_class():
    """A pickle written when the DataModule lived in ``lightning_dynamical.pool``."""
    loaded = pickle.loads(b"clightning_dynamical.pool\nActiveLearningDataModule\n.")
    assert loaded is lightning_dynamical.ActiveLearningDataModule


def test_old_class_path_in_a_config():
    parser = ArgumentParser()
    parser.add_argument("--loop", type=lightning_dynamical.ActiveLearningLoop)
    cfg = parser.parse_args(["--loop", '{"class_path": "lightning_dynamical.callback.ActiveLearningLoop", '
                             '"init_args": {"query_size": 7}}'])
    loop = parser.instantiate_classes(cfg).loop
    assert isinstance(loop, lightning_dynamical.ActiveLearningLoop) and loop.query_size == 7


def test_unknown_old_name_is_not_invented():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("lightning_dynamical.no_such_module")
