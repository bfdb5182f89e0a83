"""``lightning-dynamical``: LightningCLI for active-learning runs configured in YAML."""

from __future__ import annotations

import os
import sys

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


def default_wandb_offline() -> None:
    """Log to W&B offline unless the user configured W&B (a mode, an API key or a login)."""
    if "WANDB_MODE" in os.environ or "WANDB_API_KEY" in os.environ:
        return
    netrc = os.path.expanduser("~/.netrc")
    if os.path.exists(netrc) and "api.wandb.ai" in open(netrc).read():
        return
    os.environ["WANDB_MODE"] = "offline"


class ActiveLearningCLI(LightningCLI):
    """LightningCLI with any LightningModule and DataModule selectable by ``class_path``."""


def run(args: list[str] | None = None) -> ActiveLearningCLI:
    """Build and run the CLI; returns it (for tests and notebooks)."""
    default_wandb_offline()
    return ActiveLearningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-dynamical`` console script (``fit``, ``validate``, ``test``).

    ``label ...`` (``label import <csv> --state <al_state.json>``) is handed to :mod:`lightning_dynamical.labels`
    and exits with its status.
    """
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] == "label":
        from lightning_dynamical.labels import main as label_main

        raise SystemExit(label_main(argv[1:]))
    run(args)


if __name__ == "__main__":
    main()
