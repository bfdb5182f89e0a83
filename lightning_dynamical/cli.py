"""``lightning-dynamical``: LightningCLI for active-learning runs configured in YAML."""

from __future__ import annotations

import os

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


def main(args: list[str] | None = None) -> ActiveLearningCLI:
    """Entry point of the ``lightning-dynamical`` console script (``fit``, ``validate``, ``test``)."""
    default_wandb_offline()
    return ActiveLearningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
