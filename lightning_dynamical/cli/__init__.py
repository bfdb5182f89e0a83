"""``lightning-dynamical``: the LightningCLI entry point (:mod:`.app`), ``doc`` (:mod:`.doc`), the checks run
before a fit starts (:mod:`.preflight`) and resuming an interrupted run (:mod:`.resume`)."""

from lightning_dynamical.cli.app import main

__all__ = ["main"]
