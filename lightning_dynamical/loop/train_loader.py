"""Rebuilding the train loader after the labeled set grew, inside one ``trainer.fit``.

Lightning has no public "reload the train loader now": ``reload_dataloaders_every_n_epochs`` reloads on a
fixed schedule, not when a round ends. Clearing the fit loop's private ``_combined_loader`` makes its
``setup_data`` call the data module's ``train_dataloader`` again before the next epoch. This is the one
place that touches it; ``pyproject.toml`` pins the Lightning versions the tests cover.
"""

from __future__ import annotations

from lightning.pytorch import Trainer


def reload_train_dataloader(trainer: Trainer) -> None:
    """Have the next training epoch use a fresh ``datamodule.train_dataloader()``."""
    fit_loop = trainer.fit_loop
    if not hasattr(fit_loop, "_combined_loader"):
        raise RuntimeError("this Lightning version's fit loop has no _combined_loader: ActiveLearningLoop cannot "
                           "reload the train loader; install a Lightning version within pyproject.toml's range")
    fit_loop._combined_loader = None
